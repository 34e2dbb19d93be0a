"""Exact message sizes: the protobuf-encoded size of a Flower Message (metadata + content)."""

from __future__ import annotations

from flwr.app import Message
from flwr.common.serde import message_to_proto


def message_bytes(msg: Message) -> int:
    """Bytes of ``msg`` as protobuf, the payload Flower's Fleet API carries for it."""
    return message_to_proto(msg).ByteSize()
