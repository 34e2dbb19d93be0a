"""A whole payload as one uint8 blob (Flower pays its per-``Array`` metadata once), and the
payload's raw size."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedenergy.codecs.checks import Layout, Payload, PayloadError, check_structure

_U8 = np.dtype(np.uint8)


def payload_nbytes(payload: Mapping[str, np.ndarray]) -> int:
    """Raw array bytes of a payload (what the codec promises; excludes keys/.npy headers)."""
    return int(sum(np.asarray(a).nbytes for a in payload.values()))


def pack(payload: Mapping[str, np.ndarray], layout: Layout) -> np.ndarray:
    """Concatenate the payload's arrays (layout order, little-endian) into one uint8 array of
    exactly the layout's byte size; :class:`PayloadError` if the payload does not fit it."""
    check_structure(payload, layout)
    parts = [
        payload[k].astype(dt.newbyteorder("<"), copy=False).view(np.uint8)
        for k, (dt, _) in layout.items()
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)


def unpack(blob: np.ndarray, layout: Layout) -> Payload:
    """Split a :func:`pack` blob back into read-only views, one per layout key (no copy).

    The blob must be a 1-D uint8 ndarray of exactly the layout's byte size, otherwise
    :class:`PayloadError`.
    """
    if type(blob) is not np.ndarray:
        raise PayloadError(f"blob: expected a numpy.ndarray, got {type(blob).__name__}")
    if blob.dtype != _U8 or blob.ndim != 1:
        raise PayloadError(f"blob: expected a 1-D uint8 array, got {blob.dtype} {blob.shape}")
    total = sum(dt.itemsize * n for dt, n in layout.values())
    if blob.shape[0] != total:
        raise PayloadError(f"blob: {blob.shape[0]} bytes where the template requires {total}")
    buf = np.ascontiguousarray(blob)
    out: Payload = {}
    offset = 0
    for key, (dt, n) in layout.items():
        arr = np.frombuffer(buf, dtype=dt.newbyteorder("<"), count=n, offset=offset)
        out[key] = arr if arr.dtype == dt else arr.astype(dt)
        offset += dt.itemsize * n
    return out
