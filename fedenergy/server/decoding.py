"""Update decoding: compressed train updates back to full weights for the wrapped strategy."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from flwr.app import Message

from fedenergy.codecs import CodecSpec, PayloadError, decode_reply_content


def decode_updates(
    replies: Iterable[Message],
    codecs: Mapping[int, CodecSpec],
    global_arrays: dict | None,
    reject: Callable[[int, str], None],
) -> list[Message]:
    """Replace every encoded update (``codecs``: the uplink codec asked of each node) by the
    full float32 weights ``global + update`` so the wrapped strategy aggregates weights as
    usual; a reply whose payload is malformed (or encoded with another codec than asked) is
    dropped and handed to ``reject(node_id, reason)``."""
    kept = []
    for msg in replies:
        nid = msg.metadata.src_node_id
        spec = codecs.get(nid)
        if spec is None or spec.name == "none":
            kept.append(msg)
            continue
        try:
            if global_arrays is None:
                raise PayloadError("no global model was sent this round")
            content = decode_reply_content(msg.content, spec, global_arrays)
        except PayloadError as err:
            reject(nid, f"update payload: {err}")
            continue
        msg.content = content
        kept.append(msg)
    return kept
