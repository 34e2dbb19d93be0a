"""Uplink compression in the real federation: client encode + error feedback, server decode and
rejection of hostile payloads, and smaller uploads in the ledger of real simulations."""

import json
from statistics import mean

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedenergy import codecs as C
from fedenergy.cli import main
from fedenergy.client.mod import energy_mod
from fedenergy.codecs import numpy_arrays, template_of
from fedenergy.ledger import Ledger
from fedenergy.protocol import CODEC_RECORD, PAYLOAD_KEY, RESIDUAL_KEY
from fedenergy.server import EnergyAwareStrategy, FixedPolicy, FleetState, NodeInfo
from fedenergy.settings import Settings
from fedenergy.sim.clientapp import app as _app  # noqa: F401  (registers handlers)
from fedenergy.sim.clientapp import train
from fedenergy.sim.tasks import get_task

NODES, ROUNDS = 6, 3


def _train_message(node_id: int, codec: str, arrays: ArrayRecord) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, node_id, node_id
    cfg = ConfigRecord(
        {
            "server-round": 1,
            "lr": 0.1,
            "fe-task": "digits",
            "fe-seed": 0,
            "fe-epochs": 1,
            "fe-batch-size": 32,
            "fe-device": "rpi4",
            "fe-link": "lte",
            "fe-codec": codec,
        }
    )
    return Message(
        RecordDict({"arrays": arrays, "config": cfg}),
        message_type=MessageType.TRAIN,
        dst_node_id=node_id,
    )


def _context(node_id: int, pid: int) -> Context:
    return Context(
        run_id=1,
        node_id=node_id,
        node_config={"partition-id": pid, "num-partitions": 10},
        state=RecordDict(),
        run_config={},
    )


@pytest.fixture
def global_arrays():
    return ArrayRecord(get_task("digits").make_model().state_dict())


def _strategy(tmp_path, codec: str, node_ids) -> EnergyAwareStrategy:
    fleet = FleetState([NodeInfo(n, i, "rpi4", "lte") for i, n in enumerate(node_ids)], 0, 0.059)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    return EnergyAwareStrategy(
        FedAvg(),
        fleet,
        ledger,
        "r",
        {},
        fraction_train=1.0,
        policy=FixedPolicy(C.parse_codec(codec)),
    )


class _Grid:
    def get_node_ids(self):
        return []


def test_settings_and_cli_reject_a_bad_codec(capsys):
    assert Settings(codec="topk:0.01").validate().codec == "topk:0.01"
    assert Settings.from_run_config({"codec": "int8:channel"}).validate().codec == "int8:channel"
    with pytest.raises(ValueError, match="codec"):
        Settings(codec="topk:2").validate()
    with pytest.raises(ValueError, match="codec"):
        Settings(codec="zip").validate()
    assert main(["simulate", "--codec", "qsgd:500"]) == 2
    assert "codec" in capsys.readouterr().out


@pytest.mark.parametrize("codec", ["topk:0.1", "stc:0.1"])
def test_residual_persists_in_context_state_across_train_calls(global_arrays, codec):
    spec = C.parse_codec(codec)
    ctx = _context(42, 3)
    template = template_of(numpy_arrays(global_arrays))
    ctx.state[RESIDUAL_KEY] = ArrayRecord({"stale": Array(np.zeros(3, np.float32))})
    msg = _train_message(42, codec, global_arrays)
    reply1 = energy_mod(msg, ctx, lambda m, c: train(m, c))
    assert reply1.content[CODEC_RECORD]["codec"] == codec
    assert list(reply1.content["arrays"].keys()) == [PAYLOAD_KEY]
    r1 = numpy_arrays(ctx.state[RESIDUAL_KEY])  # the stale residual was discarded
    assert template_of(r1) == template
    assert any(np.abs(v).sum() > 0 for v in r1.values())
    reply2 = energy_mod(msg, ctx, lambda m, c: train(m, c))
    r2 = numpy_arrays(ctx.state[RESIDUAL_KEY])
    # same data, same seed: the same local update u both times, so with error feedback
    # u + r1 == decoded2 + r2; without it, decoded2 would equal decoded1.
    blob = [r.content["arrays"][PAYLOAD_KEY].numpy() for r in (reply1, reply2)]
    d1, d2 = (C.decode(C.unpack_payload(b, spec, template), spec, template) for b in blob)
    for k in template:
        u = d1[k] + r1[k]  # first call had no residual
        np.testing.assert_allclose(d2[k] + r2[k], u + r1[k], atol=1e-5)
    assert any(not np.array_equal(d1[k], d2[k]) for k in template)


def test_strategy_decodes_updates_and_rejects_hostile_payloads(tmp_path, global_arrays):
    ids = (41, 42, 43)
    strategy = _strategy(tmp_path, "topk:0.1", ids)
    msgs = list(strategy.configure_train(1, global_arrays, ConfigRecord({"lr": 0.1}), _Grid()))
    assert {m.content["config"]["fe-codec"] for m in msgs} == {"topk:0.1"}
    replies = [
        energy_mod(m, _context(m.metadata.dst_node_id, i), lambda m, c: train(m, c))
        for i, m in enumerate(msgs)
    ]
    by_node = {r.metadata.src_node_id: r for r in replies}
    spec, glob = C.parse_codec("topk:0.1"), numpy_arrays(global_arrays)
    template = template_of(glob)
    good = C.unpack_payload(by_node[41].content["arrays"][PAYLOAD_KEY].numpy(), spec, template)
    update = C.decode(good, spec, template)
    # node 42: out-of-range top-k index inside a well-formed blob
    bad = {k: v.copy() for k, v in good.items()}
    bad["0.weight.idx"][-1] = np.uint16(65535)
    by_node[42].content["arrays"] = ArrayRecord(
        {PAYLOAD_KEY: Array(C.pack_payload(bad, spec, template))}
    )
    # node 43: claims another codec
    by_node[43].content[CODEC_RECORD] = ConfigRecord({"codec": "int8"})
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert strategy.collector.counts == {"selected": 3, "succeeded": 1, "failed": 2}
    reasons = dict(strategy.collector.rejected)
    assert "out of range" in reasons[42] and "codec label" in reasons[43]
    assert metrics is not None
    out = numpy_arrays(arrays)
    for k, g in glob.items():
        assert out[k].dtype == np.float32
        np.testing.assert_allclose(out[k], g + update[k], rtol=1e-6, atol=1e-7)
    outcome = strategy.commit_round(1, None, None)
    assert outcome.failed == 2 and len(outcome.rejected) == 2
    # all three were tried in round 1; only node 41's update counted as training
    fleet = strategy.fleet
    assert [fleet[n].last_tried for n in ids] == [1, 1, 1]
    assert [fleet[n].last_round for n in ids] == [1, 0, 0]
    strategy.ledger.close()


def _simulate(out, codec: str) -> tuple[dict, float, float]:
    args = ["simulate", "--nodes", str(NODES), "--rounds", str(ROUNDS), "--fraction", "0.5"]
    args += ["--fraction-evaluate", "0", "--seed", "2", "--codec", codec, "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    with Ledger(out / "ledger.sqlite") as ledger:
        rows = ledger.energy_rows(summary["run_id"])
        comps = ledger.components(summary["run_id"])
    up = [r["bytes"] for r in rows if r["call"] == "train" and r["phase"] == "upload"]
    assert len(up) == ROUNDS * NODES // 2
    infra = [
        c["joules"]
        for c in comps
        if (c["call"], c["phase"], c["domain"]) == ("train", "upload", "infrastructure")
    ]
    assert len(infra) == len(up)
    return summary, mean(up), mean(infra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {
        c: _simulate(tmp_path_factory.mktemp(c.replace(":", "_")), c)
        for c in ("none", "topk:0.1", "stc:0.1", "int8")
    }


@pytest.mark.parametrize("codec", ["topk:0.1", "stc:0.1", "int8"])
def test_compressed_simulation_learns_and_uploads_fewer_bytes(runs, codec):
    summary, up, infra = runs[codec]
    _, base_up, base_infra = runs["none"]
    assert summary["status"] == "completed"
    acc = [r["accuracy"] for r in summary["per_round"]]
    assert acc[-1] > acc[0] + 0.2
    assert all(r["failed"] == 0 for r in summary["per_round"])
    assert up < base_up / 2.5, (codec, up, base_up)
    # the mod prices the reply's protobuf bytes, so the upload's network energy shrinks too
    # (infrastructure energy is linear in bytes and the same for every link)
    assert infra == pytest.approx(base_infra * up / base_up, rel=1e-6)
