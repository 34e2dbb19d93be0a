"""The QUERY reply carries only the keys the coordinator reads: nothing else of a node's config
(paths, secrets) leaves the node."""

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedenergy.protocol import PROFILE_KEYS, PROFILE_RECORD, REPORT_KEY
from fedenergy.report import EnergyReport
from fedenergy.sim.clientapp import app
from fedenergy.wire import upload_bytes


def _query() -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 42, 1
    cfg = ConfigRecord({"fe-task": "digits", "fe-seed": 0, "fe-fleet": "reference"})
    return Message(RecordDict({"config": cfg}), message_type=MessageType.QUERY, dst_node_id=42)


def _ask(node_config: dict) -> tuple[dict, Message]:
    ctx = Context(run_id=1, node_id=42, node_config=node_config, state=RecordDict(), run_config={})
    reply = app(_query(), ctx)
    assert not reply.has_error()
    return dict(reply.content[PROFILE_RECORD]), reply


SECRETS = {"sysfs-root": "/secret/path", "api-token": "s3cr3t-t0ken", "tdp-w": 15.0}


def test_a_deployed_node_sends_only_the_profile_keys():
    node_config = {
        "partition-id": 3,
        "num-partitions": 10,
        "device": "rpi4",
        "link": "wifi",
        "country": "FRA",
        **SECRETS,
    }
    profile, reply = _ask(node_config)
    assert set(profile) == set(PROFILE_KEYS)
    assert profile["partition-id"] == 3 and profile["country"] == "FRA"
    assert (profile["device"], profile["link"]) == ("rpi4", "wifi")
    assert profile["num-examples"] > 0
    # nothing of the secrets anywhere in the reply, report included
    wire = str(reply.content)
    assert not any(str(v) in wire for v in SECRETS.values() if isinstance(v, str))
    rep = EnergyReport.from_record(reply.content[REPORT_KEY])
    assert abs(rep.bytes_up - upload_bytes(reply, 42)) <= 2


def test_a_simulated_node_sends_its_partition_fleet_profile_and_data_size():
    profile, _ = _ask({"partition-id": 0, "num-partitions": 10, **SECRETS})
    assert set(profile) == {"partition-id", "device", "link", "num-examples"}
    assert set(profile) <= set(PROFILE_KEYS)
