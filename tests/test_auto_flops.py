"""The energy mod around a plain Flower ClientApp (no fedenergy code in its handlers): the FLOPs
of its torch work are counted automatically, training is bit-identical with and without the mod,
and a call whose work nobody knows is reported ``unmetered``, never 0 J modeled.

The CNN is the example app's (examples/quickstart-energy: conv-BatchNorm-ReLU-pool twice,
dropout, linear); its analytic FLOP count and the convention behind it are in
tests/example_cnn.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity

import fedenergy.client.torch_work as torch_work
from fedenergy.client.mod import energy_mod, stated_work_mod
from fedenergy.client.work import report_work
from fedenergy.physics.flops import FlopCache, PassCache
from fedenergy.protocol import REPORT_KEY
from fedenergy.report import EnergyReport
from fedenergy.wire import download_bytes, reply_ack_bytes
from tests.example_cnn import FORWARD, PARAMS, Net, train_flops

N, BATCH, EPOCHS = 40, 16, 2  # batches of 16, 16 and 8 per epoch: 6 optimizer steps


def analytic_train_flops() -> int:
    return train_flops(N, BATCH, EPOCHS)


def make_cnn() -> torch.nn.Module:
    """The example app's CNN (one definition: tests/example_cnn.py imports it)."""
    return Net()


def local_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(N, 3, 32, 32, generator=g), torch.randint(0, 10, (N,), generator=g)


class PlainTrain:
    """A Flower train handler as a user writes it; keeps its model and optimizer to inspect."""

    def __call__(self, msg: Message, context: Context) -> Message:
        model = make_cnn()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        x, y = local_data()
        model.train()
        for _ in range(EPOCHS):
            for i in range(0, N, BATCH):
                opt.zero_grad()
                loss = F.cross_entropy(model(x[i : i + BATCH]), y[i : i + BATCH])
                loss.backward()
                opt.step()
        self.model, self.opt = model, opt
        momentum = {
            f"m{i}": opt.state[p]["momentum_buffer"]
            for i, p in enumerate(opt.param_groups[0]["params"])
        }
        return Message(
            RecordDict(
                {
                    "arrays": ArrayRecord(model.state_dict()),
                    "optimizer": ArrayRecord(momentum),
                    "metrics": MetricRecord({"train-loss": loss.item(), "num-examples": N}),
                }
            ),
            reply_to=msg,
        )


def plain_evaluate(msg: Message, context: Context, no_grad: bool = True) -> Message:
    model = make_cnn()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.eval()
    x, y = local_data()
    with torch.set_grad_enabled(not no_grad):
        loss = F.cross_entropy(model(x), y)
    return Message(
        RecordDict({"metrics": MetricRecord({"eval-loss": loss.item(), "num-examples": N})}),
        reply_to=msg,
    )


def plain_query(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"answer": ConfigRecord({"hello": "world"})}), reply_to=msg)


def _message(message_type: str) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 42, 1
    torch.manual_seed(0)
    content = RecordDict({"config": ConfigRecord({"server-round": 1, "fe-device": "rpi4"})})
    if message_type != MessageType.QUERY:
        content["arrays"] = ArrayRecord(make_cnn().state_dict())
    return Message(content, message_type=message_type, dst_node_id=42)


def _context() -> Context:
    return Context(
        run_id=1,
        node_id=42,
        node_config={"partition-id": 0, "num-partitions": 1},
        state=RecordDict(),
        run_config={},
    )


def _compute(record: ConfigRecord) -> list[tuple[str, float, str, str]]:
    """(phase, joules, provenance, source) of each compute component of the call itself (not
    the start-up phase of its ClientApp process), read off the record."""
    return [
        (record["c-phase"][i], record["c-joules"][i], record["c-provenance"][i], s)
        for i, s in enumerate(record["c-source"])
        if record["c-domain"][i] == "compute" and record["c-phase"][i] != "startup"
    ]


@pytest.fixture
def fresh_passes(monkeypatch) -> PassCache:
    """A process-wide FLOP memo of our own, so this test's calls are counted, not looked up."""
    passes = PassCache()
    monkeypatch.setattr(torch_work, "PASSES", passes)
    return passes


def test_the_analytic_count_describes_the_cnn():
    assert sum(p.numel() for p in make_cnn().parameters()) == PARAMS


def test_a_train_call_is_counted_within_2_percent_of_the_analytic_count(fresh_passes):
    msg = _message(MessageType.TRAIN)
    reply = energy_mod(msg, _context(), PlainTrain())
    rep = EnergyReport.from_record(reply.content[REPORT_KEY])
    assert rep.flops == pytest.approx(analytic_train_flops(), rel=0.02)
    assert fresh_passes.counted == 2  # one per batch shape (16 and 8), not one per step
    [(phase, joules, prov, source)] = _compute(reply.content[REPORT_KEY])
    assert (phase, prov) == ("train", "modeled") and "counted torch work" in source
    # the steps and batch are counted too: 3 optimizer steps an epoch, batches of up to 16; on
    # the threads torch runs (u of the Pi 4's 4 cores): 1.05e10 x u FLOP/s, 3.84e-4 s a step,
    # at 2.29 + 4.53 x u W
    assert (rep.steps, rep.batch) == (EPOCHS * 3, BATCH)
    assert rep.threads == torch.get_num_threads()
    u = min(rep.threads, 4) / 4
    busy_s = rep.flops / (1.05e10 * u) + EPOCHS * 3 * 3.84e-4
    assert joules == pytest.approx((2.29 + 4.53 * u) * busy_s)
    assert rep.bytes_down == download_bytes(msg) + reply_ack_bytes(reply)
    # counted again in the same process: the memo answers, the figure is the same
    again = energy_mod(msg, _context(), PlainTrain())
    assert EnergyReport.from_record(again.content[REPORT_KEY]).flops == rep.flops
    assert fresh_passes.counted == 2


def test_training_is_bit_identical_with_and_without_the_mod(fresh_passes):
    msg = _message(MessageType.TRAIN)
    runs = []
    for with_mod in (False, True):
        torch.manual_seed(123)
        start = torch.get_rng_state()
        handler = PlainTrain()
        reply = energy_mod(msg, _context(), handler) if with_mod else handler(msg, _context())
        runs.append((handler, reply, start, torch.get_rng_state()))
    (plain, plain_reply, start, plain_rng), (metered, reply, _, rng) = runs
    assert REPORT_KEY in reply.content and fresh_passes.counted > 0
    assert not torch.equal(plain_rng, start)  # dropout drew from the generator
    assert torch.equal(plain_rng, rng)
    ref, got = plain.model.state_dict(), metered.model.state_dict()
    assert int(got["bn1.num_batches_tracked"]) == EPOCHS * 3
    for name in ref:  # weights, BatchNorm running_mean / running_var / num_batches_tracked
        assert torch.equal(ref[name], got[name]), name
    for p, q in zip(plain.model.parameters(), metered.model.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)
    for p, q in zip(
        plain.opt.param_groups[0]["params"], metered.opt.param_groups[0]["params"], strict=True
    ):
        assert torch.equal(
            plain.opt.state[p]["momentum_buffer"], metered.opt.state[q]["momentum_buffer"]
        )
    for key in ("arrays", "optimizer"):
        a, b = plain_reply.content[key], reply.content[key]
        assert a.keys() == b.keys()
        assert all((a[k].numpy() == b[k].numpy()).all() for k in a)


@pytest.mark.parametrize("no_grad", [True, False])
def test_an_evaluate_call_counts_the_forward_only(fresh_passes, no_grad):
    """Under no_grad, and also with grad enabled but no backward pass run."""
    msg = _message(MessageType.EVALUATE)
    reply = energy_mod(msg, _context(), lambda m, c: plain_evaluate(m, c, no_grad))
    rep = EnergyReport.from_record(reply.content[REPORT_KEY])
    assert rep.kind == "evaluate"
    assert rep.flops == pytest.approx(N * FORWARD, rel=0.02)


def test_a_call_without_torch_work_is_reported_unmetered():
    msg = _message(MessageType.QUERY)
    reply = energy_mod(msg, _context(), plain_query)
    record = reply.content[REPORT_KEY]
    [(phase, joules, prov, source)] = _compute(record)
    assert (phase, joules, prov) == ("query", 0.0, "unmetered")
    assert "no torch module call seen" in source
    assert record["flops"] == 0
    assert record["bytes-down"] == download_bytes(msg) + reply_ack_bytes(reply)
    # the network is accounted as always
    assert {"radio", "infrastructure"} <= set(record["c-domain"])


def test_stated_work_takes_precedence_over_the_count(fresh_passes):
    def stating(m: Message, c: Context) -> Message:
        reply = PlainTrain()(m, c)
        report_work(reply, 12345, "train")
        return reply

    reply = energy_mod(_message(MessageType.TRAIN), _context(), stating)
    assert "fedenergy.work" not in reply.content
    assert EnergyReport.from_record(reply.content[REPORT_KEY]).flops == 12345
    [(_, _, prov, source)] = _compute(reply.content[REPORT_KEY])
    assert prov == "modeled" and source.startswith("devices.toml:rpi4; 12345 FLOP, 0 steps")
    assert fresh_passes.counted == 0  # the recorded torch work was never counted


def test_the_stated_work_mod_counts_nothing(fresh_passes):
    """stated_work_mod (for apps whose handlers always state their work) takes a stated work as
    energy_mod does, and counts no torch work: a call that states nothing is unmetered."""

    def stating(m: Message, c: Context) -> Message:
        reply = PlainTrain()(m, c)
        report_work(reply, 12345, "train")
        return reply

    reply = stated_work_mod(_message(MessageType.TRAIN), _context(), stating)
    assert EnergyReport.from_record(reply.content[REPORT_KEY]).flops == 12345
    reply = stated_work_mod(_message(MessageType.TRAIN), _context(), PlainTrain())
    [(phase, joules, prov, source)] = _compute(reply.content[REPORT_KEY])
    assert (phase, joules, prov) == ("train", 0.0, "unmetered")
    assert "this mod counts no work" in source and fresh_passes.counted == 0


def test_a_meter_takes_precedence_and_the_counted_flops_stay_beside(
    fresh_passes, tmp_path, monkeypatch
):
    """meter="auto" on a fake RAPL tree: compute is measured; the report still carries the
    counted FLOPs."""
    import fedenergy.client.measured as measured
    from fedenergy.meters import StartupCost

    zone = tmp_path / "sys/class/powercap/intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    real = measured.startup_cost
    monkeypatch.setattr(measured, "startup_cost", lambda: StartupCost(2.0, 3.0, real().started_at))

    def handler(m: Message, c: Context) -> Message:
        (zone / "energy_uj").write_text("6000000\n")
        return PlainTrain()(m, c)

    node = {"partition-id": 0, "meter": "auto", "sysfs-root": str(tmp_path)}
    ctx = Context(1, 42, node, RecordDict(), {})
    reply = energy_mod(_message(MessageType.TRAIN), ctx, handler)
    rep = EnergyReport.from_record(reply.content[REPORT_KEY])
    train = [c for c in rep.components if (c.phase, c.domain) == ("train", "compute")]
    assert [c.provenance for c in train] == ["measured"]
    assert rep.flops == analytic_train_flops()


def test_the_builtin_client_app_keeps_its_stated_numbers():
    from fedenergy.sim.clientapp import train
    from fedenergy.sim.tasks import DataConfig, get_task

    task = get_task("digits")
    msg = _message(MessageType.TRAIN)
    msg.content["arrays"] = ArrayRecord(task.make_model().state_dict())
    cfg = {"fe-task": "digits", "fe-epochs": 1, "fe-batch-size": 32, "lr": 0.1}
    for k, v in cfg.items():
        msg.content["config"][k] = v
    ctx = Context(1, 42, {"partition-id": 3, "num-partitions": 10}, RecordDict(), {})
    rep = EnergyReport.from_record(energy_mod(msg, ctx, train).content[REPORT_KEY])
    data, _ = task.client_data(3, DataConfig(num_partitions=10))
    expected = FlopCache().training(task.make_model(), data.x, len(data), 32, 1)
    assert rep.flops == expected
    [(_, _, _, source)] = _compute(energy_mod(msg, ctx, train).content[REPORT_KEY])
    assert source.startswith(f"devices.toml:rpi4; {expected} FLOP")


class _Opaque:
    """An argument a shape-only description cannot stand for."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x


class _TakesOpaque(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 2)

    def forward(self, batch: _Opaque) -> torch.Tensor:
        return self.lin(batch.x)


class _KeywordsAndTuples(torch.nn.Module):
    """Keyword arguments in, a tuple out: both are described and counted."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> tuple:
        return self.a(x) * scale, self.b(x)


def test_torch_work_that_cannot_be_counted_is_unmetered_not_zero(fresh_passes):
    def handler(m: Message, c: Context) -> Message:
        with torch.no_grad():
            _TakesOpaque()(_Opaque(torch.zeros(4, 8)))
        return plain_query(m, c)

    reply = energy_mod(_message(MessageType.QUERY), _context(), handler)
    [(_, joules, prov, source)] = _compute(reply.content[REPORT_KEY])
    assert (joules, prov) == (0.0, "unmetered") and "not countable" in source
    assert "_TakesOpaque" in source


def test_keyword_arguments_and_tuple_outputs_are_counted(fresh_passes):
    def handler(m: Message, c: Context) -> Message:
        model = _KeywordsAndTuples()
        out, _ = model(torch.zeros(5, 8), scale=2.0)
        out.sum().backward()  # through the first output only
        return plain_query(m, c)

    reply = energy_mod(_message(MessageType.QUERY), _context(), handler)
    flops = reply.content[REPORT_KEY]["flops"]
    forward = 2 * 5 * 8 * (4 + 3)
    assert flops == forward + 2 * 5 * 8 * 4  # + the weight gradient of the first output's layer


def test_the_hooks_are_gone_after_the_call_even_when_the_handler_raises():
    from torch.nn.modules import module
    from torch.optim import optimizer

    def failing(m: Message, c: Context) -> Message:
        make_cnn()(torch.zeros(2, 3, 32, 32))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        energy_mod(_message(MessageType.TRAIN), _context(), failing)
    energy_mod(_message(MessageType.QUERY), _context(), plain_query)
    assert not module._global_forward_pre_hooks and not module._global_forward_hooks
    assert not optimizer._global_optimizer_post_hooks


def test_a_client_app_without_torch_does_not_load_it():
    script = textwrap.dedent(
        """
        import sys
        from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
        from flwr.supercore.task_identity import TaskIdentity
        from fedenergy.client.mod import energy_mod, stated_work_mod
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 42, 1
        msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}),
                      message_type=MessageType.QUERY, dst_node_id=42)
        ctx = Context(1, 42, {"partition-id": 0}, RecordDict(), {})
        reply = energy_mod(msg, ctx, lambda m, c: Message(RecordDict(), reply_to=m))
        rec = reply.content["fedenergy.report"]
        i = list(rec["c-domain"]).index("compute")
        print(rec["c-provenance"][i], "|", rec["c-source"][i], "|", "torch" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    prov, source, torch_loaded = (s.strip() for s in out.stdout.strip().split("|"))
    assert prov == "unmetered" and "torch not loaded" in source
    assert torch_loaded == "False"


# -- one real Flower simulation: a plain ClientApp with the mod, a ServerApp sending one call ----
app = ClientApp(mods=[energy_mod])


@app.train()
def sim_train(msg: Message, context: Context) -> Message:
    return PlainTrain()(msg, context)


@app.query()
def sim_query(msg: Message, context: Context) -> Message:
    return plain_query(msg, context)


def test_a_real_flower_simulation_reports_counted_and_unmetered_work():
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from fedenergy.sim.engine import prepare_environment

    prepare_environment()
    replies: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            deadline = time.monotonic() + 60
            while not list(grid.get_node_ids()) and time.monotonic() < deadline:
                time.sleep(0.2)
            node = next(iter(grid.get_node_ids()))
            torch.manual_seed(0)
            arrays = ArrayRecord(make_cnn().state_dict())
            for kind in (MessageType.TRAIN, MessageType.QUERY):
                content = RecordDict({"config": ConfigRecord({"server-round": 1})})
                if kind == MessageType.TRAIN:
                    content["arrays"] = arrays
                out = Message(content, dst_node_id=node, message_type=kind)
                [reply] = grid.send_and_receive([out], timeout=120)
                replies[kind] = reply
        except BaseException as err:  # surfaced after the engine stops
            replies["error"] = err

    run_simulation(
        server_app=server_app,
        client_app=app,
        num_supernodes=1,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": 1, "num_gpus": 0, "include_dashboard": False},
        },
    )
    if "error" in replies:
        raise replies["error"]
    train = replies[MessageType.TRAIN]
    assert not train.has_error(), train.error
    rep = EnergyReport.from_record(train.content[REPORT_KEY])
    assert rep.flops == pytest.approx(analytic_train_flops(), rel=0.02)
    [(_, joules, prov, _)] = _compute(train.content[REPORT_KEY])
    assert prov == "modeled" and joules > 0
    query = replies[MessageType.QUERY]
    [(_, joules, prov, source)] = _compute(query.content[REPORT_KEY])
    assert (joules, prov) == (0.0, "unmetered") and source.startswith("unmetered")
