"""``topk:<f>``: DGC-style top-k sparsification (Lin et al., ICLR 2018) with error feedback.

Keeps ``max(1, ceil(f * n))`` entries per tensor; indices uint16/int32/int64 (the narrowest that
holds ``n``), values float16 scaled by one float32 per-tensor scale (~``1/f`` smaller with
uint16 indices).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from fedenergy.codecs.checks import Layout, Payload, PayloadError, check_finite, check_scale
from fedenergy.codecs.params import FractionCodec

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_U16 = np.dtype(np.uint16)
_I32 = np.dtype(np.int32)
_I64 = np.dtype(np.int64)


def topk_count(n: int, fraction: float) -> int:
    """Entries kept by top-k/STC for a tensor of ``n`` entries: ``min(n, max(1, ceil(f * n)))``.

    Computed in decimal on the shortest repr of ``fraction`` so that e.g. 0.07 * 100 gives 7,
    not 8.  An empty tensor keeps 0 entries; any non-empty tensor keeps at least 1.
    """
    if n <= 0:
        return 0
    k = math.ceil(Decimal(repr(float(fraction))) * n)
    return min(n, max(1, k))


def index_dtype(n: int) -> np.dtype:
    """The narrowest index dtype for a tensor of ``n`` entries: uint16, int32 or int64."""
    if n <= 1 << 16:
        return _U16
    if n <= 1 << 31:
        return _I32
    return _I64


def select_largest(x: np.ndarray, k: int) -> np.ndarray:
    """Indices (int64, strictly increasing) of the ``k`` entries of ``x`` with the largest |x|."""
    n = x.size
    if k == n:
        return np.arange(n, dtype=np.int64)
    idx = np.argpartition(np.abs(x), n - k)[n - k :].astype(np.int64)
    idx.sort()
    return idx


@dataclass(frozen=True)
class TopK(FractionCodec):
    """``topk:<f>``: parts ``.idx`` (k indices), ``.val`` (float16, k values in [-1, 1]) and
    ``.scale`` (float32, 1: max |kept|) per tensor."""

    name = "topk"
    forms = "topk:<fraction in (0, 1]> (e.g. topk:0.01)"
    error_feedback = True

    def error_bound(self) -> str:
        return (
            "dropped entries decode to 0 and go to the residual exactly; a kept entry has "
            "|err| <= 2**-11 |x| + 2**-24 max|kept| (also kept in the residual)"
        )

    def tensor_layout(self, name: str, shape: tuple[int, ...], plan: Any) -> Layout:
        n = math.prod(shape)
        k = topk_count(n, self.fraction)
        return {
            f"{name}.idx": (index_dtype(n), k),
            f"{name}.val": (_F16, k),
            f"{name}.scale": (_F32, 1),
        }

    def encode_tensor(
        self,
        name: str,
        flat: np.ndarray,
        shape: tuple[int, ...],
        plan: Any,
        rng: np.random.Generator | None,
    ) -> Payload:
        n = flat.size
        k = topk_count(n, self.fraction)
        idx = select_largest(flat, k)
        kept = flat[idx].astype(np.float64)
        m = float(np.max(np.abs(kept))) if k else 0.0
        if m > 0:
            val = (kept / m).astype(np.float16)  # |val| <= 1
        else:
            val = np.zeros(k, dtype=np.float16)
        return {
            f"{name}.idx": idx.astype(index_dtype(n)),
            f"{name}.val": val,
            f"{name}.scale": np.array([m], dtype=np.float32),
        }

    def check_tensor(self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any) -> None:
        n = math.prod(shape)
        check_scale(f"{name}.scale", payload[f"{name}.scale"])
        val = payload[f"{name}.val"]
        check_finite(f"{name}.val", val)
        if val.size and float(np.max(np.abs(val))) > 1.0:
            raise PayloadError(f"'{name}.val': |value| > 1 (values are scaled to [-1, 1])")
        idx = payload[f"{name}.idx"]
        if idx.size:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0:
                raise PayloadError(f"'{name}.idx': negative index {lo}")
            if hi >= n:
                raise PayloadError(f"'{name}.idx': index {hi} out of range for {n} entries")
            if idx.size > 1 and not (np.diff(idx.astype(np.int64)) > 0).all():
                raise PayloadError(
                    f"'{name}.idx': indices must be strictly increasing (no duplicates)"
                )

    def decode_tensor(
        self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any
    ) -> np.ndarray:
        out = np.zeros(math.prod(shape), dtype=np.float32)
        out[payload[f"{name}.idx"]] = payload[f"{name}.val"]  # float16 -> float32 is exact
        out *= payload[f"{name}.scale"][0]  # |val| <= 1, so no overflow; dropped entries stay 0
        return out
