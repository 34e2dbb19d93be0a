"""Message sizes as Flower's own traffic counter counts them, and a transport-framing estimate.

Flower 1.42 moves a message between SuperLink and SuperNode as its metadata plus a tree of
content-addressed objects (the Message, its RecordDict, each record, each array and array
chunk): each object is serialized as a header (class name, the SHA-256 ids of its children,
the body's length) and a body. The SuperLink's per-run counter (``flwr ls`` ->
``network-traffic``, ``fleet_handlers.py``) adds, per call:

* towards the node (outbound): the PullMessages response that hands the node the message
  (its metadata and object tree of ids), every object the node then pulls, and the PushMessages
  response to the node's reply (the ids of the objects to push, a session id);
* from the node (inbound): the PullMessages request that returned the message, the PushMessages
  request of the reply (its metadata, object tree and ClientApp runtime) and every object
  pushed.

:func:`download_bytes` and :func:`upload_bytes` rebuild exactly those protobuf messages and
objects with Flower's own serializers, so the ledger counts what Flower counts. Not counted by
either (docs/deployment.md §9): HTTP/TLS/TCP framing (:func:`framing_bytes` estimates it, beside
the ledger), heartbeats, polls that return nothing, registration, the FAB download, and objects
Flower de-duplicates (an object the receiving store already holds is not sent again).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from flwr.app import Message
from flwr.common.serde import message_to_proto
from flwr.proto.fleet_pb2 import (  # Flower's Fleet API messages
    PullMessagesRequest,
    PullMessagesResponse,
    PushMessagesRequest,
    PushMessagesResponse,
    Reconnect,
)
from flwr.proto.node_pb2 import Node
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree

SESSION_ID_CHARS = 36  # the SuperLink's object-push session id: a UUID4 string
RECONNECT_S = 5  # the PushMessages response's reconnect hint (fleet_handlers.push_messages)


def _envelope(msg: Message) -> tuple:
    """(metadata proto as the Fleet API carries it, object tree, the objects' total bytes)."""
    objects = get_all_nested_objects(msg)  # computes every object id once
    body = sum(len(o.deflate()) for o in objects.values())
    meta = message_to_proto(msg)
    meta.ClearField("content")  # the content travels as objects
    if not meta.metadata.message_id:  # set by Flower when the message is pushed
        meta.metadata.message_id = msg.object_id
    return meta, get_object_tree(msg), body


def object_bytes(obj) -> int:
    """Bytes of one inflatable object (a record, say) as pushed or pulled: header + body."""
    return len(obj.deflate())


def download_bytes(msg: Message) -> int:
    """What Flower counts towards the node for receiving ``msg``: the PullMessages response and
    every object pulled (the acknowledgement of its reply is :func:`reply_ack_bytes`)."""
    meta, tree, body = _envelope(msg)
    pull = PullMessagesResponse(messages_list=[meta], message_object_trees=[tree])
    return pull.ByteSize() + body


def reply_ack_bytes(reply: Message) -> int:
    """What Flower counts towards the node when it pushes ``reply``: the PushMessages response
    (the reply's id, the ids of the objects to push, the session id)."""
    tree_ids = [o for o in get_all_nested_objects(reply)]
    ack = PushMessagesResponse(
        reconnect=Reconnect(reconnect=RECONNECT_S),
        results={reply.object_id: 0},
        objects_to_push=tree_ids,
        session_id="0" * SESSION_ID_CHARS,
    )
    return ack.ByteSize()


def upload_bytes(reply: Message, node_id: int) -> int:
    """What Flower counts from node ``node_id`` for a call answered by ``reply``: the
    PullMessages request that fetched the call's message, the PushMessages request of the reply
    and every object pushed."""
    meta, tree, body = _envelope(reply)
    node = Node(node_id=node_id)
    push = PushMessagesRequest(
        node=node,
        messages_list=[meta],
        message_object_trees=[tree],
        clientapp_runtime_list=[0.0],  # a double: the same size whatever the runtime
    )
    return PullMessagesRequest(node=node).ByteSize() + push.ByteSize() + body


def message_bytes(msg: Message) -> int:
    """Bytes of ``msg`` as protobuf (metadata + content), the payload alone, without Flower's
    object framing (kept for comparisons; the ledger counts :func:`download_bytes` and
    :func:`upload_bytes`)."""
    return message_to_proto(msg).ByteSize()


class Framing(NamedTuple):
    """A transport-framing estimate (bytes), beside the ledger's counted bytes, not in them."""

    http: int  # request line / status line and headers, one exchange per request
    tls: int  # TLS 1.3 record headers and AEAD tags
    tcp_ip: int  # TCP/IP headers, one per segment (MSS-sized)

    @property
    def total(self) -> int:
        return self.http + self.tls + self.tcp_ip


HTTP_EXCHANGE_BYTES = 400  # ASSUMPTION: HTTP/1.1 request + response headers of one Fleet call
TLS_RECORD_BYTES = 16_384  # TLS max plaintext per record (RFC 8446 §5.1)
TLS_RECORD_OVERHEAD = 22  # 5-byte record header + 16-byte AEAD tag + 1 content-type byte
TCP_MSS = 1448  # payload per segment: 1500-byte MTU - 20 IPv4 - 20 TCP - 12 timestamp option
TCP_IP_HEADER_BYTES = 52  # IPv4 20 + TCP 20 + timestamps 12 per segment


def framing_bytes(payload: int, requests: int, tls: bool = True) -> Framing:
    """Estimated bytes HTTP/1.1, TLS and TCP/IP add to ``payload`` bytes moved in ``requests``
    HTTP exchanges (Flower's Fleet API: one per PullMessages, PushMessages, PullObject and
    PushObject call). Per request: ``HTTP_EXCHANGE_BYTES`` of headers; per TLS record of up
    to 16 KiB: 22 bytes; per TCP segment of ``TCP_MSS`` bytes: 52 bytes of TCP/IP headers. No
    handshakes, ACK-only segments or retransmissions (connections are kept alive)."""
    http = requests * HTTP_EXCHANGE_BYTES
    carried = payload + http
    records = requests * math.ceil(carried / max(requests, 1) / TLS_RECORD_BYTES) if tls else 0
    tls_b = records * TLS_RECORD_OVERHEAD
    segments = math.ceil((carried + tls_b) / TCP_MSS) + requests
    return Framing(http, tls_b, segments * TCP_IP_HEADER_BYTES)


def fleet_requests(msg: Message) -> int:
    """HTTP requests Flower makes to move ``msg`` one way: one per object, plus the Pull/Push
    Messages call."""
    return len(get_all_nested_objects(msg)) + 1
