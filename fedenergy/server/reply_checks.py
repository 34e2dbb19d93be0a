"""What a reply must look like for the wrapped strategy to aggregate it (docs/robustness.md)."""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Message

from fedenergy.codecs import CodecSpec, PayloadError
from fedenergy.protocol import NUM_EXAMPLES

FLOATS = ("float16", "float32", "float64")
MAX_EXAMPLES = 10**9  # num-examples above this in one reply is not a device's local data set


def check_reply(
    msg: Message, call: str, spec: CodecSpec | None, global_arrays: dict | None
) -> None:
    """The reply's content must be aggregatable: one MetricRecord with a positive, finite
    ``num-examples`` and finite numbers; for an uncompressed train update (``spec``: the uplink
    codec asked, None or ``none``), one ArrayRecord with the global model's names, shapes and
    float dtypes (integer ones for integer or scalar global arrays), all finite (compressed
    updates are checked when decoded). Raise PayloadError with the reason."""
    metrics = msg.content.metric_records
    if len(metrics) != 1:
        raise PayloadError(f"expected one MetricRecord, got {len(metrics)}")
    (rec,) = metrics.values()
    for key, v in rec.items():
        values = v if isinstance(v, list) else [v]
        if not all(finite(x) for x in values):
            raise PayloadError(f"metric {str(key)[:40]!r} is not a finite number")
    n = rec.get(NUM_EXAMPLES)
    if isinstance(n, list) or n is None or not 0 < n <= MAX_EXAMPLES:
        raise PayloadError(f"num-examples must be in (0, {MAX_EXAMPLES}], got {n!r:.40}")
    if call != "train":
        return
    arrays = msg.content.array_records
    if len(arrays) != 1:
        raise PayloadError(f"expected one ArrayRecord, got {len(arrays)}")
    if (spec is not None and spec.name != "none") or global_arrays is None:
        return
    (rec,) = arrays.values()
    if list(rec.keys()) != list(global_arrays):
        raise PayloadError("update arrays do not have the global model's names")
    for k, g in global_arrays.items():
        a = rec[k]
        # any float dtype is fine (FedAdam's global is float64, clients send float32); an
        # integer one where the global array is an integer or a scalar: a counter such as
        # BatchNorm's num_batches_tracked, which Flower's FedAvg averages into a float64
        counter = a.dtype.startswith(("int", "uint")) and (g.ndim == 0 or g.dtype.kind in "iu")
        if tuple(a.shape) != tuple(g.shape) or not (a.dtype in FLOATS or counter):
            raise PayloadError(
                f"update array {k!r}: {a.dtype} {a.shape}, expected a float {tuple(g.shape)}"
            )
        try:
            x = a.numpy()
        except Exception as err:  # a malformed .npy buffer
            raise PayloadError(f"unreadable update array {k!r} ({type(err).__name__})") from None
        if x.shape != g.shape or (np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all()):
            raise PayloadError(f"update array {k!r} is malformed or not finite")


def metric_names(msg: Message) -> frozenset:
    """The metric names of a checked reply (its one MetricRecord's keys)."""
    return frozenset(next(iter(msg.content.metric_records.values())).keys())


def finite(x) -> bool:
    """A finite int or float (bools and numbers beyond float range are not)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False
