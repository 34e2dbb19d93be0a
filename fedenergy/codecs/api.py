"""The module-level codec functions callers use; each checks that it was given a codec and
delegates to that codec's methods (or to :mod:`fedenergy.codecs.packing`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedenergy.codecs import packing
from fedenergy.codecs.base import Codec
from fedenergy.codecs.checks import Layout, Payload
from fedenergy.codecs.registry import GLOBAL_CODECS


def as_codec(spec: Codec) -> Codec:
    """``spec`` itself; ``TypeError`` if it is not a codec (e.g. a codec string)."""
    if not isinstance(spec, Codec):
        raise TypeError(f"spec must be a CodecSpec (a Codec), got {type(spec).__name__}")
    return spec


def uses_error_feedback(spec: Codec) -> bool:
    """True when ``encode`` keeps a residual (error feedback): top-k, STC and STC-b built in.

    QSGD is unbiased and int8/fp16 errors are bounded, so they are sent without error feedback.
    """
    return as_codec(spec).error_feedback


def payload_layout(spec: Codec, template: Mapping[str, tuple[int, ...]]) -> Layout:
    """Exact wire layout: ``key -> (dtype, length)`` of every (1-D) payload array, model order."""
    return as_codec(spec).layout(template)


def expected_nbytes(spec: Codec, template: Mapping[str, tuple[int, ...]]) -> int:
    """Raw array bytes that ``encode`` produces for this template (headers included)."""
    return as_codec(spec).expected_nbytes(template)


def expected_ratio(spec: Codec, template: Mapping[str, tuple[int, ...]]) -> float:
    """Size promise: float32 bytes of the template / payload bytes (1.0 for an empty template)."""
    return as_codec(spec).expected_ratio(template)


def encode(
    update: Mapping[str, np.ndarray],
    spec: Codec,
    residual: Mapping[str, np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[Payload, dict[str, np.ndarray] | None]:
    """``(payload, new_residual)`` of ``update``; see :meth:`Codec.encode`."""
    return as_codec(spec).encode(update, residual, rng)


def decode(
    payload: Mapping[str, np.ndarray],
    spec: Codec,
    template: Mapping[str, tuple[int, ...]],
) -> dict[str, np.ndarray]:
    """Validate and decode a (hostile) payload; only ``PayloadError`` for a bad payload, see
    :meth:`Codec.decode`."""
    return as_codec(spec).decode(payload, template)


def pack_payload(
    payload: Mapping[str, np.ndarray],
    spec: Codec,
    template: Mapping[str, tuple[int, ...]],
) -> np.ndarray:
    """Concatenate a payload's arrays (layout order, little-endian) into one uint8 array.

    Flower stores every ``Array`` with its own metadata (~180 bytes of protobuf per array), which
    dominates top-k payloads of small models; one blob per update pays that once.  The blob holds
    exactly :func:`expected_nbytes` bytes; :func:`unpack_payload` is the inverse.
    """
    return packing.pack(payload, as_codec(spec).layout(template))


def unpack_payload(
    blob: np.ndarray,
    spec: Codec,
    template: Mapping[str, tuple[int, ...]],
) -> Payload:
    """Split a :func:`pack_payload` blob back into a payload dict (then call :func:`decode`).

    The blob must be a 1-D uint8 ndarray of exactly ``expected_nbytes(spec, template)`` bytes,
    otherwise :class:`PayloadError`; the arrays returned are read-only views (no copy).
    """
    return packing.unpack(blob, as_codec(spec).layout(template))


def _downlink_codec(spec: Codec) -> Codec:
    spec = as_codec(spec)
    if not spec.downlink:
        raise ValueError(
            f"downlink codec must be one of {', '.join(GLOBAL_CODECS)} or a registered codec "
            f"that allows the downlink (got {spec.label()}); top-k, STC and QSGD are "
            "uplink-only (they need error feedback or averaging)"
        )
    return spec


def encode_global(arrays: Mapping[str, np.ndarray], spec: Codec) -> Payload:
    """Encode the global model for the downlink (built in: ``none``, ``fp16``, ``int8``,
    ``int8:channel``).

    The server should adopt ``decode_global(payload, ...)`` as the reference model that clients
    compute their deltas against, so that both sides agree on the base of ``delta``.
    """
    payload, _ = _downlink_codec(spec).encode(arrays)
    return payload


def decode_global(
    payload: Mapping[str, np.ndarray],
    spec: Codec,
    template: Mapping[str, tuple[int, ...]],
) -> dict[str, np.ndarray]:
    """Client-side decode of :func:`encode_global` (same validation as :func:`decode`)."""
    return _downlink_codec(spec).decode(payload, template)
