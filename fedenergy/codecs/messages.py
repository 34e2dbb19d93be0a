"""Uplink update compression on Flower messages (client encode, server decode).

The client sends ``update = new - global`` encoded with :mod:`fedenergy.codecs` instead of its
full weights: the reply's ``"arrays"`` ArrayRecord holds ONE packed uint8 blob (``pack_payload``,
so Flower's per-Array metadata is paid once) and a ConfigRecord ``"fedenergy.codec"`` says which
codec encoded it.  For top-k and STC the error-feedback residual stays on the node, in
``context.state``.
The server (:class:`~fedenergy.server.EnergyAwareStrategy`) checks the label, unpacks and
decodes against the current global model's shapes, and hands the wrapped Flower strategy the
full weights ``global + update`` so that FedAvg, FedProx or FedAdam aggregate as usual.
With codec ``none`` nothing here is used: clients send their full weights as before.
Normalisation statistics (:func:`~fedenergy.codecs.raw.travels_raw`) travel as their new
values, not as a difference, so the server receives them bit for bit (a float32
``global + (new - global)`` need not equal ``new``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedenergy.codecs.api import (
    decode,
    decode_global,
    encode,
    expected_nbytes,
    pack_payload,
    unpack_payload,
    uses_error_feedback,
)
from fedenergy.codecs.base import Codec
from fedenergy.codecs.checks import PayloadError
from fedenergy.codecs.raw import travels_raw
from fedenergy.codecs.registry import parse_codec
from fedenergy.protocol import ARRAYS_RECORD, CODEC_RECORD, PAYLOAD_KEY, RESIDUAL_KEY


def numpy_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """``{name: ndarray}`` of an ArrayRecord, in its order."""
    return {k: v.numpy() for k, v in record.items()}


def template_of(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of ``arrays``: the template a payload is decoded against."""
    return {k: tuple(int(d) for d in np.shape(v)) for k, v in arrays.items()}


def _load_residual(state: RecordDict, update: Mapping[str, np.ndarray]):
    rec = state.get(RESIDUAL_KEY) if RESIDUAL_KEY in state else None
    if not isinstance(rec, ArrayRecord):
        return None
    try:
        res = numpy_arrays(rec)
    except Exception:  # an unreadable residual is as good as none
        return None
    if list(res) != list(update) or any(
        res[k].shape != update[k].shape or res[k].dtype != np.float32 for k in update
    ):
        return None  # the model changed: start error feedback afresh
    return res


def encode_reply_arrays(
    new: Mapping[str, np.ndarray],
    global_: Mapping[str, np.ndarray],
    spec: Codec,
    state: RecordDict,
    rng: np.random.Generator | None = None,
) -> tuple[ArrayRecord, ConfigRecord]:
    """Encode ``new - global_`` (float32, model order) into the reply's ArrayRecord (one packed
    blob) and the codec-label ConfigRecord; the top-k/STC residual is read from and written to
    ``state`` (the node's ``context.state``).  Raw tensors (normalisation statistics) are sent
    as ``new`` itself."""
    update = {
        k: np.asarray(new[k], dtype=np.float32)
        if travels_raw(k)
        else np.asarray(new[k], dtype=np.float32) - np.asarray(global_[k], dtype=np.float32)
        for k in global_
    }
    residual = _load_residual(state, update) if uses_error_feedback(spec) else None
    payload, new_residual = encode(update, spec, residual, rng)
    if new_residual is not None:
        state[RESIDUAL_KEY] = ArrayRecord({k: Array(v) for k, v in new_residual.items()})
    blob = pack_payload(payload, spec, template_of(update))
    return (
        ArrayRecord({PAYLOAD_KEY: Array(blob)}),
        ConfigRecord({"codec": spec.label()}),
    )


def _raw_value(name: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A decoded raw statistic in the global model's ``dtype``; PayloadError for a negative
    variance or a counter that is not a whole number an int dtype holds exactly."""
    if name.endswith("running_var") and (value < 0).any():
        raise PayloadError(f"{name!r}: negative running variance")
    if not np.issubdtype(dtype, np.floating) and not (
        (np.abs(value) <= 2**24).all() and (value == np.round(value)).all()
    ):
        raise PayloadError(f"{name!r}: a counter must be a whole number below 2**24")
    return value.astype(dtype, copy=False)


def decode_reply_content(
    content: RecordDict, spec: Codec, global_: Mapping[str, np.ndarray]
) -> RecordDict:
    """Return a copy of a reply's content whose ``"arrays"`` are the full float32 weights
    ``global_ + decode(payload)`` (raw tensors: the decoded values themselves, in the global
    model's dtype) and without the codec label; :class:`PayloadError` (with the reason) for
    anything wrong: label, record layout, blob or payload, or a negative ``running_var``."""
    rec = content.config_records.get(CODEC_RECORD)
    label = None if rec is None else rec.get("codec")
    if label != spec.label():
        raise PayloadError(f"codec label {label!r} does not match the requested {spec.label()!r}")
    records = content.array_records
    if list(records) != [ARRAYS_RECORD]:
        raise PayloadError(f"expected one ArrayRecord 'arrays', got {sorted(records)}")
    arrays = records[ARRAYS_RECORD]
    if list(arrays.keys()) != [PAYLOAD_KEY]:
        raise PayloadError(f"expected one array {PAYLOAD_KEY!r}, got {sorted(arrays.keys())}")
    template = template_of(global_)
    expected = expected_nbytes(spec, template)
    item = arrays[PAYLOAD_KEY]
    if item.dtype != "uint8" or tuple(item.shape) != (expected,):
        raise PayloadError(
            f"payload blob must be uint8 of shape ({expected},), got {item.dtype} {item.shape}"
        )
    try:
        blob = item.numpy()
    except Exception as err:  # a malformed .npy buffer
        raise PayloadError(f"unreadable payload array ({type(err).__name__})") from None
    update = decode(unpack_payload(blob, spec, template), spec, template)
    full = {}
    for k, g in global_.items():
        if travels_raw(k):
            full[k] = Array(np.asarray(_raw_value(k, update[k], np.asarray(g).dtype)))
            continue
        dtype = g.dtype if np.issubdtype(g.dtype, np.floating) else np.float32
        value = (np.asarray(g, dtype=np.float32) + update[k]).astype(dtype, copy=False)
        full[k] = Array(np.asarray(value))  # a 0-d sum is a NumPy scalar (BatchNorm's counter)
    out = RecordDict({k: v for k, v in content.items() if k not in (ARRAYS_RECORD, CODEC_RECORD)})
    out[ARRAYS_RECORD] = ArrayRecord(full)
    return out


def decode_downlink(
    arrays: ArrayRecord, label: str, template: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Client side: the float32 global model from a downlink-encoded ``arrays`` record
    (one uint8 blob, see ``pack_payload``); PayloadError for anything wrong."""
    spec = parse_codec(label)
    if list(arrays.keys()) != [PAYLOAD_KEY]:
        raise PayloadError(f"expected one array {PAYLOAD_KEY!r}, got {sorted(arrays.keys())}")
    blob = arrays[PAYLOAD_KEY].numpy()
    return decode_global(unpack_payload(blob, spec, template), spec, template)
