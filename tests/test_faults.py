"""The simulation's fault mod: offline rounds and device failures of fleet nodes, and the node's
own fleet profile for the energy mod, through the real ClientApp's handlers."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedenergy.client.mod import energy_mod
from fedenergy.protocol import (
    FAILURE_REASON,
    NODE_PROFILE_STATE_KEY,
    OFFLINE_REASON,
    REPORT_KEY,
    RESIDUAL_KEY,
)
from fedenergy.report import EnergyReport
from fedenergy.sim.clientapp import app, evaluate_local, train
from fedenergy.sim.faults import simulated_faults
from fedenergy.sim.fleet import is_online, load_fleet
from fedenergy.sim.tasks import get_task
from fedenergy.wire import download_bytes, reply_ack_bytes, upload_bytes

NUM_NODES, SEED = 4, 3
FLAKY = """
name = "flaky"
[[group]]
device = "rpi4"
link = "lte"
fraction = 0.5
availability = 0.5
failure_prob = 0.5
[[group]]
device = "phone"
link = "5g"
fraction = 0.5
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    path = tmp_path_factory.mktemp("fleet") / "flaky.toml"
    path.write_text(FLAKY)
    return str(path)


@pytest.fixture(scope="module")
def arrays():
    return ArrayRecord(get_task("digits").make_model().state_dict())


def _message(kind, arrays, server_round, fleet=None, **extra) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 42, server_round
    cfg = {
        "server-round": server_round,
        "lr": 0.1,
        "fe-task": "digits",
        "fe-seed": SEED,
        "fe-epochs": 1,
        "fe-batch-size": 32,
        **extra,
    }
    if fleet is not None:
        cfg["fe-fleet"] = fleet
    content = RecordDict({"config": ConfigRecord(cfg)})
    if kind != MessageType.QUERY:
        content["arrays"] = arrays
    return Message(content, message_type=kind, dst_node_id=42)


def _context(pid, **node_config) -> Context:
    cfg = {"partition-id": pid, "num-partitions": NUM_NODES, **node_config}
    return Context(run_id=1, node_id=42, node_config=cfg, state=RecordDict(), run_config={})


def _profiles(fleet):
    return load_fleet(fleet).assign(NUM_NODES, SEED)


def _flaky_partition(fleet) -> int:
    return next(p.partition_id for p in _profiles(fleet) if p.device.id == "rpi4")


class _Spy:
    """call_next of the fault mod: the energy mod around a handler, counting calls."""

    def __init__(self, handler):
        self.handler, self.calls = handler, 0

    def __call__(self, msg, ctx):
        self.calls += 1
        return energy_mod(msg, ctx, self.handler)


def _fails(server_round, pid, prob) -> bool:
    return np.random.default_rng([SEED, 0xFA11, server_round, pid]).random() < prob


def test_offline_rounds_and_failures_follow_the_fleet_draws(fleet, arrays):
    pid = _flaky_partition(fleet)
    seen = set()
    for rnd in range(1, 11):
        ctx, spy = _context(pid), _Spy(train)
        msg = _message(MessageType.TRAIN, arrays, rnd, fleet)
        reply = simulated_faults(msg, ctx, spy)
        if not is_online(SEED, rnd, pid, 0.5):
            seen.add("offline")
            assert spy.calls == 0  # the message never reached the device: nothing metered
            assert reply.has_error() and reply.error.reason == f"{OFFLINE_REASON} this round"
        elif _fails(rnd, pid, 0.5):
            seen.add("failed")
            assert spy.calls == 1  # the device trained, then died before replying
            assert reply.has_error()
            assert reply.error.reason == f"{FAILURE_REASON} (fleet failure_prob=0.5)"
        else:
            seen.add("ok")
            assert spy.calls == 1 and not reply.has_error()
            rep = EnergyReport.from_record(reply.content[REPORT_KEY])
            assert (rep.device, rep.link, rep.server_round) == ("rpi4", "lte", rnd)
        assert reply.metadata.reply_to_message_id == msg.metadata.message_id
    assert seen == {"offline", "failed", "ok"}  # every branch was exercised


def test_evaluate_is_skipped_offline_but_never_fails(fleet, arrays):
    pid = _flaky_partition(fleet)
    outcomes = []
    for rnd in range(1, 11):
        spy = _Spy(evaluate_local)
        reply = simulated_faults(
            _message(MessageType.EVALUATE, arrays, rnd, fleet), _context(pid), spy
        )
        online = is_online(SEED, rnd, pid, 0.5)
        assert spy.calls == int(online)
        assert reply.has_error() != online
        outcomes.append(online)
    assert True in outcomes and False in outcomes


def test_the_client_app_plays_faults_outside_the_energy_mod(fleet, arrays):
    pid = _flaky_partition(fleet)
    rounds = range(1, 11)
    offline = next(r for r in rounds if not is_online(SEED, r, pid, 0.5))
    ok = next(r for r in rounds if is_online(SEED, r, pid, 0.5) and not _fails(r, pid, 0.5))
    reply = app(_message(MessageType.TRAIN, arrays, offline, fleet), _context(pid))
    assert reply.has_error() and reply.error.reason.startswith(OFFLINE_REASON)
    msg = _message(MessageType.TRAIN, arrays, ok, fleet)
    reply = app(msg, _context(pid))
    rep = EnergyReport.from_record(reply.content[REPORT_KEY])
    assert (rep.device, rep.link) == ("rpi4", "lte")  # the node's own fleet profile
    # the message was not touched on the way in
    assert rep.bytes_down == download_bytes(msg) + reply_ack_bytes(reply)
    assert abs(rep.bytes_up - upload_bytes(reply, 42)) <= 2


def test_a_failed_device_loses_the_state_its_call_wrote(fleet, arrays):
    pid = _flaky_partition(fleet)
    rounds = [r for r in range(1, 21) if is_online(SEED, r, pid, 0.5)]
    failing = next(r for r in rounds if _fails(r, pid, 0.5))
    passing = next(r for r in rounds if not _fails(r, pid, 0.5))
    ctx = _context(pid)
    app(_message(MessageType.TRAIN, arrays, failing, fleet, **{"fe-codec": "topk:0.1"}), ctx)
    assert RESIDUAL_KEY not in ctx.state  # a first call that failed leaves no residual
    app(_message(MessageType.TRAIN, arrays, passing, fleet, **{"fe-codec": "topk:0.1"}), ctx)
    before = ctx.state[RESIDUAL_KEY]
    reply = app(
        _message(MessageType.TRAIN, arrays, failing, fleet, **{"fe-codec": "topk:0.1"}), ctx
    )
    assert reply.has_error() and reply.error.reason.startswith(FAILURE_REASON)
    assert ctx.state[RESIDUAL_KEY] is before  # the residual of the failed call is gone
    app(_message(MessageType.TRAIN, arrays, passing, fleet, **{"fe-codec": "topk:0.1"}), ctx)
    assert ctx.state[RESIDUAL_KEY] is not before  # a call that replies keeps its residual


def test_deployed_nodes_have_no_simulated_faults(fleet, arrays):
    pid = _flaky_partition(fleet)
    for rnd in range(1, 11):
        spy = _Spy(train)
        ctx = _context(pid, device="jetson-orin-nano", link="wifi")
        reply = simulated_faults(_message(MessageType.TRAIN, arrays, rnd, fleet), ctx, spy)
        assert spy.calls == 1 and not reply.has_error()
        rep = EnergyReport.from_record(reply.content[REPORT_KEY])
        assert (rep.device, rep.link) == ("jetson-orin-nano", "wifi")


def _resolved(fleet, arrays, ctx, **cfg):
    reply = app(_message(MessageType.EVALUATE, arrays, 1, fleet, **cfg), ctx)
    rep = EnergyReport.from_record(reply.content[REPORT_KEY])
    return rep.device, rep.link


def test_profile_precedence_node_config_then_server_then_fleet_then_defaults(fleet, arrays):
    """The order the energy mod resolves a device and a link in, one field at a time."""
    steady = next(p.partition_id for p in _profiles(fleet) if p.device.id == "phone")
    assert _resolved(fleet, arrays, _context(steady)) == ("phone", "5g")
    server = {"fe-device": "rpi5", "fe-link": "wifi"}
    assert _resolved(fleet, arrays, _context(steady), **server) == ("rpi5", "wifi")
    assert _resolved(fleet, arrays, _context(steady), **{"fe-link": "wifi"}) == ("phone", "wifi")
    node = _context(steady, device="laptop", link="ethernet")
    assert _resolved(fleet, arrays, node, **server) == ("laptop", "ethernet")
    # a node config naming only its device: its link comes from the server, else the fleet
    assert _resolved(fleet, arrays, _context(steady, device="laptop")) == ("laptop", "5g")
    assert _resolved(fleet, arrays, _context(steady, device="laptop"), **server) == (
        "laptop",
        "wifi",
    )
    # no fleet: the defaults, and a profile recorded by an earlier call does not linger
    ctx = _context(steady)
    assert _resolved(fleet, arrays, ctx) == ("phone", "5g")
    assert NODE_PROFILE_STATE_KEY in ctx.state
    assert _resolved(None, arrays, ctx) == ("laptop", "wifi")
    assert NODE_PROFILE_STATE_KEY not in ctx.state


def test_query_reports_the_fleet_profile_of_a_simulated_node(fleet):
    for p in _profiles(fleet):
        reply = app(_message(MessageType.QUERY, None, 0, fleet), _context(p.partition_id))
        prof = reply.content["profile"]
        assert (prof["device"], prof["link"]) == (p.device.id, p.link.id)
        rep = EnergyReport.from_record(reply.content[REPORT_KEY])
        assert (rep.device, rep.link) == (p.device.id, p.link.id)
