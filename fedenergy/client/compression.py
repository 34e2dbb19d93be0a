"""Compression on a user's ClientApp: the two steps a train handler takes when the server
compresses (``EnergyAware(..., compression=...)``).

The server says which codecs a node uses in each train message's config: ``fe-downlink`` for
the global model it sent, ``fe-codec`` for the update it wants back. :func:`received_model`
gives the global model as float32 weights either way; :func:`compress_reply` replaces the
reply's full weights by the encoded update (new - global) the server decodes before the
wrapped strategy aggregates. With codec ``none`` (no compression) both leave things as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedenergy.codecs import (
    decode_downlink,
    encode_reply_arrays,
    numpy_arrays,
    parse_codec,
    template_of,
)
from fedenergy.protocol import (
    ARRAYS_RECORD,
    CFG_CODEC,
    CFG_DOWNLINK,
    CODEC_RECORD,
    CONFIG_RECORD,
    SERVER_ROUND,
)


def _config(msg: Message) -> ConfigRecord:
    return msg.content.config_records.get(CONFIG_RECORD, ConfigRecord())


def received_model(
    msg: Message, like: ArrayRecord | Mapping[str, np.ndarray] | None = None
) -> ArrayRecord:
    """The global model ``msg`` carries (its ``arrays``), decoded to float32 weights when the
    server compressed it. ``like``: the model's own weights (names and shapes), needed only to
    decode a compressed model."""
    arrays = msg.content[ARRAYS_RECORD]
    label = str(_config(msg).get(CFG_DOWNLINK, "none"))
    if label == "none":
        return arrays
    if like is None:
        raise ValueError(f"the global model came compressed ({label}): pass like=your model")
    shapes = numpy_arrays(like) if isinstance(like, ArrayRecord) else like
    decoded = decode_downlink(arrays, label, template_of(shapes))
    return ArrayRecord({k: Array(v) for k, v in decoded.items()})


def compress_reply(reply: Message | RecordDict, msg: Message, context: Context) -> None:
    """Encode the reply's update with the uplink codec ``msg`` asks for, in place: its
    ``arrays`` (the new full weights) become the encoded ``new - global`` and a codec label.
    Nothing changes when the codec is ``none``. Top-k and STC keep their error-feedback
    residual in ``context.state``."""
    spec = parse_codec(str(_config(msg).get(CFG_CODEC, "none")))
    if spec.name == "none":
        return
    content = reply.content if isinstance(reply, Message) else reply
    new = numpy_arrays(content[ARRAYS_RECORD])
    global_ = numpy_arrays(received_model(msg, new))
    rng = np.random.default_rng([int(_config(msg).get(SERVER_ROUND, 0)), int(context.node_id)])
    arrays, label = encode_reply_arrays(new, global_, spec, context.state, rng)
    content[ARRAYS_RECORD], content[CODEC_RECORD] = arrays, label
