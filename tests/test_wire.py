"""fedenergy.wire: message sizes as Flower's traffic counter counts them (the deployment test
checks them against the real counter) and the transport-framing estimate, by hand."""

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedenergy.wire import download_bytes, fleet_requests, framing_bytes, message_bytes

TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1  # outside a run


def _msg(n_arrays: int) -> Message:
    # distinct arrays: identical ones are one object, sent once (content-addressed)
    arrays = ArrayRecord({f"a{i}": Array(np.full(10, i, np.float32)) for i in range(n_arrays)})
    return Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord({"lr": 0.1})}),
        message_type=MessageType.TRAIN,
        dst_node_id=7,
    )


def test_framing_estimate_by_hand():
    # 10,000 B in 2 requests: HTTP 2 x 400 = 800 B; 10,800 B carried, 5,400 B per request: one
    # TLS record each, 2 x 22 = 44 B; ceil(10,844 / 1,448) = 8 segments + 2 partly filled ones,
    # 10 x 52 = 520 B of TCP/IP headers
    f = framing_bytes(10_000, 2)
    assert (f.http, f.tls, f.tcp_ip, f.total) == (800, 44, 520, 1364)
    assert framing_bytes(10_000, 2, tls=False).tls == 0


def test_each_array_adds_two_objects_with_their_ids():
    # Message, RecordDict, ArrayRecord, ConfigRecord + an Array and its chunk per array
    assert fleet_requests(_msg(1)) == 4 + 2 + 1 and fleet_requests(_msg(3)) == 4 + 6 + 1
    # Flower's framing is on top of the protobuf payload, and it grows with the objects: each
    # array's two objects carry at least their 64-character ids twice (tree and parent header)
    one, three = _msg(1), _msg(3)
    extra_one = download_bytes(one) - message_bytes(one)
    extra_three = download_bytes(three) - message_bytes(three)
    assert extra_one > 0 and extra_three - extra_one > 2 * 2 * 2 * 64
