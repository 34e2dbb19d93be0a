"""Transport framing (HTTP/1.1, TLS, TCP/IP) of one train call of the digits MLP, an estimate
beside the bytes the ledger counts (docs/deployment.md §9; fedenergy.wire.framing_bytes).

    python simulations/framing_estimate.py
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedenergy.sim.tasks import get_task
from fedenergy.wire import (
    download_bytes,
    fleet_requests,
    framing_bytes,
    message_bytes,
    reply_ack_bytes,
    upload_bytes,
)

NODE_ID = 5357940659175578139  # a SuperNode id as Flower draws them (a large uint64)


def main() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1  # outside a run
    arrays = ArrayRecord(get_task("digits").make_model().state_dict())
    cfg = ConfigRecord({"lr": 0.3, "server-round": 1})
    msg = Message(
        RecordDict({"arrays": arrays, "config": cfg}),
        message_type=MessageType.TRAIN,
        dst_node_id=NODE_ID,
    )
    reply = Message(
        RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 74})}),
        reply_to=msg,
    )
    for way, m, counted in (
        ("down", msg, download_bytes(msg) + reply_ack_bytes(reply)),
        ("up", reply, upload_bytes(reply, NODE_ID)),
    ):
        n = fleet_requests(m)
        f = framing_bytes(counted, n)
        print(
            f"{way:>4}: protobuf {message_bytes(m)} B, counted (as Flower) {counted} B, "
            f"{n} requests; framing http {f.http} + tls {f.tls} + tcp/ip {f.tcp_ip} = "
            f"{f.total} B ({100 * f.total / counted:.0f} % of counted)"
        )


if __name__ == "__main__":
    main()
