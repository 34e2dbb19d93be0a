import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedenergy.client.mod import energy_mod
from fedenergy.physics.call import radio_energy
from fedenergy.physics.infra import infrastructure_energy_j
from fedenergy.physics.network import get_link
from fedenergy.protocol import REPORT_KEY
from fedenergy.report import EnergyReport
from fedenergy.sim.clientapp import app as _app  # noqa: F401  (registers handlers; module under test below)
from fedenergy.sim.clientapp import train
from fedenergy.sim.tasks import get_task
from fedenergy.wire import download_bytes, reply_ack_bytes, upload_bytes


@pytest.fixture
def train_message():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 42, 1
    arrays = ArrayRecord(get_task("digits").make_model().state_dict())
    cfg = ConfigRecord(
        {
            "server-round": 2,
            "lr": 0.1,
            "fe-task": "digits",
            "fe-seed": 0,
            "fe-epochs": 1,
            "fe-batch-size": 32,
            "fe-device": "rpi4",
            "fe-link": "lte",
            "fe-infra-kwh-per-gb": 0.059,
        }
    )
    return Message(
        RecordDict({"arrays": arrays, "config": cfg}),
        message_type=MessageType.TRAIN,
        dst_node_id=42,
    )


def test_mod_attaches_a_report_built_from_exact_bytes_and_flops(train_message):
    ctx = Context(
        run_id=1,
        node_id=42,
        node_config={"partition-id": 3, "num-partitions": 10},
        state=RecordDict(),
        run_config={},
    )
    reply = energy_mod(train_message, ctx, lambda m, c: train(m, c))
    assert "fedenergy.work" not in reply.content
    rep = EnergyReport.from_record(reply.content[REPORT_KEY])
    # as Flower's traffic counter counts them (fedenergy.wire): the message and the
    # acknowledgement of the reply down, the reply (report included) up
    assert rep.bytes_down == download_bytes(train_message) + reply_ack_bytes(reply)
    assert abs(rep.bytes_up - upload_bytes(reply, 42)) <= 2  # settled by fixed point
    assert rep.server_round == 2 and rep.partition_id == 3 and rep.device == "rpi4"
    link = get_link("lte")
    comp = {(c.phase, c.domain): c.joules for c in rep.components}
    # the built-in ClientApp trains on 1 thread: 1 of the Pi 4's 4 cores, 1.05e10 / 4 FLOP/s and
    # 2.29 + 4.53 / 4 = 3.4225 W, plus 3.84e-4 s per optimizer step; then 15.4 s of start-up
    assert rep.threads == 1 and rep.steps > 0 and rep.batch > 0
    busy_s = rep.flops / 2.625e9 + rep.steps * 3.84e-4
    assert rep.compute_s == pytest.approx(busy_s)
    assert comp[("train", "compute")] == pytest.approx(3.4225 * busy_s)
    assert comp[("startup", "compute")] == pytest.approx(3.4225 * 15.4)
    radio = radio_energy(link, rep.bytes_down, rep.bytes_up, busy_s + 15.4)
    assert comp[("download", "radio")] == pytest.approx(radio.download_j)
    assert comp[("upload", "radio")] == pytest.approx(radio.upload_j)
    assert comp[("upload", "infrastructure")] == pytest.approx(
        infrastructure_energy_j(rep.bytes_up)
    )
    assert rep.flops > 0
    # the reply still satisfies FedAvg's contract: one ArrayRecord, one MetricRecord
    assert len(reply.content.array_records) == 1 and len(reply.content.metric_records) == 1


def test_node_config_profile_takes_precedence(train_message):
    ctx = Context(
        run_id=1,
        node_id=42,
        node_config={
            "partition-id": 0,
            "num-partitions": 10,
            "device": "jetson-orin-nano",
            "link": "wifi",
        },
        state=RecordDict(),
        run_config={},
    )
    reply = energy_mod(train_message, ctx, lambda m, c: train(m, c))
    rep = EnergyReport.from_record(reply.content[REPORT_KEY])
    assert (rep.device, rep.link) == ("jetson-orin-nano", "wifi")


def test_error_replies_pass_through_untouched(train_message):
    ctx = Context(
        run_id=1,
        node_id=42,
        node_config={"partition-id": 0, "num-partitions": 10},
        state=RecordDict(),
        run_config={},
    )
    from flwr.app import Error

    err = Message(Error(code=0, reason="boom"), reply_to=train_message)
    out = energy_mod(train_message, ctx, lambda m, c: err)
    assert out.has_error() and out.error.reason == "boom"


def test_deployed_node_reports_measured_energy_from_a_fake_rapl_tree(
    train_message, tmp_path, monkeypatch
):
    """meter="auto": the real RAPL reader on a fake powercap tree whose counter advances by a
    known amount during the call; the report carries it with provenance, plus start-up cost."""

    zone = tmp_path / "sys/class/powercap/intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")

    def handler(m, c):
        (zone / "energy_uj").write_text("6000000\n")  # 5 J spent during the call
        return train(m, c)

    # A deployed call runs in a fresh flwr-clientapp process whose pre-call CPU time is its
    # imports; this test runs inside pytest's long-lived process, so pin that figure to 2 s.
    import fedenergy.client.measured as measured
    from fedenergy.meters import StartupCost

    real = measured.startup_cost
    monkeypatch.setattr(
        measured,
        "startup_cost",
        lambda: StartupCost(2.0, 3.0, real().started_at),
    )
    state = RecordDict()
    ctx = Context(
        run_id=1,
        node_id=42,
        node_config={
            "partition-id": 0,
            "num-partitions": 10,
            "meter": "auto",
            "sysfs-root": str(tmp_path),
        },
        state=state,
        run_config={},
    )
    rep = EnergyReport.from_record(energy_mod(train_message, ctx, handler).content[REPORT_KEY])
    compute = [c for c in rep.components if c.domain == "compute" and c.phase == "train"]
    assert len(compute) == 1 and compute[0].provenance == "measured"
    assert "rapl" in compute[0].source
    assert rep.machine_j == pytest.approx(5.0)
    assert 0 <= compute[0].joules <= 5.0 + 1e-9
    startup = [c for c in rep.components if c.phase == "startup"]
    assert len(startup) == 1 and startup[0].joules >= 0
    # the same process again: start-up is not charged twice
    rep2 = EnergyReport.from_record(energy_mod(train_message, ctx, handler).content[REPORT_KEY])
    assert not [c for c in rep2.components if c.phase == "startup"]
