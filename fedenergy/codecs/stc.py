"""``stc:<f>``: sparse ternary compression (Sattler et al., IEEE TNNLS 2019) with error feedback.

The same ``k`` entries as top-k, but every kept value is ``+-mu`` (one float32 ``mu`` = mean
|kept| per tensor, one sign bit per entry) and the positions are Golomb-Rice coded
(:mod:`fedenergy.codecs.rice`, ~``log2(1/f) + 2`` bits per entry instead of 16-64), so a given
byte budget keeps ~4x more entries than ``topk``.  The layout is a fixed worst-case size that
follows from ``n`` and ``k``.  :class:`SparseTernary` is the wire format shared with STC-b
(:mod:`fedenergy.codecs.stcb`), which only chooses ``k`` per tensor differently.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedenergy.codecs.checks import Layout, Payload, PayloadError, Template, check_scale
from fedenergy.codecs.params import FractionCodec
from fedenergy.codecs.rice import (
    decode_positions,
    encode_positions,
    position_nbytes,
)
from fedenergy.codecs.topk import select_largest, topk_count

_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)


def stc_nbytes(n: int, k: int) -> int:
    """Payload bytes of one STC tensor with ``k`` of ``n`` entries kept: mu + signs + positions."""
    return 4 + -(-k // 8) + position_nbytes(n, k)


@dataclass(frozen=True)
class SparseTernary(FractionCodec):
    """The STC wire format: parts ``.mu`` (float32, 1), ``.sign`` (uint8, ceil(k/8): one bit per
    kept entry, 1 = negative) and ``.pos`` (uint8, the Golomb-Rice position code; empty when
    ``k == n``) per tensor.  Subclasses set the kept count ``k`` of each tensor in :meth:`plan`."""

    error_feedback = True

    def error_bound(self) -> str:
        return (
            "dropped entries decode to 0 and go to the residual exactly; a kept entry decodes "
            "to sign(x) mu, mu = mean|kept|, so |err| <= max(max|kept| - mu, mu - min|kept|) "
            "(also kept in the residual)"
        )

    @abstractmethod
    def plan(self, template: Template) -> Mapping[str, int]:
        """Entries kept per tensor (``k``)."""

    def tensor_layout(self, name: str, shape: tuple[int, ...], plan: Any) -> Layout:
        n, k = math.prod(shape), plan
        return {
            f"{name}.mu": (_F32, 1),
            f"{name}.sign": (_U8, -(-k // 8)),
            f"{name}.pos": (_U8, position_nbytes(n, k)),
        }

    def encode_tensor(
        self,
        name: str,
        flat: np.ndarray,
        shape: tuple[int, ...],
        plan: Any,
        rng: np.random.Generator | None,
    ) -> Payload:
        """Top-k entries -> sign bits and one magnitude ``mu = mean |kept|``; positions as a
        Golomb-Rice code."""
        n, k = flat.size, plan
        idx = select_largest(flat, k) if k else np.zeros(0, dtype=np.int64)
        kept = flat[idx]
        mu = float(np.mean(np.abs(kept.astype(np.float64)))) if k else 0.0
        sign = np.packbits(kept < 0, bitorder="little")
        if k == 0 or k == n:  # dense (or empty): positions are implicit
            pos = np.zeros(0, dtype=np.uint8)
        else:
            pos = encode_positions(idx, n)
        mu_arr = np.array([mu], dtype=np.float32)
        return {f"{name}.mu": mu_arr, f"{name}.sign": sign, f"{name}.pos": pos}

    def check_tensor(self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any) -> None:
        n, k = math.prod(shape), plan
        check_scale(f"{name}.mu", payload[f"{name}.mu"])
        sign = payload[f"{name}.sign"]
        if k % 8 and sign.size and int(sign[-1]) >> (k % 8):
            raise PayloadError(f"'{name}.sign': non-zero padding bits after {k} signs")
        if 0 < k < n:  # otherwise the positions are implicit (and .pos is empty)
            decode_positions(payload[f"{name}.pos"], n, k, f"{name}.pos")

    def decode_tensor(
        self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any
    ) -> np.ndarray:
        """``+-mu`` at the coded positions (sign bit 1 = negative), 0 elsewhere."""
        n, k = math.prod(shape), plan
        idx = None if k == n else decode_positions(payload[f"{name}.pos"], n, k, f"{name}.pos")
        m = np.float32(payload[f"{name}.mu"][0])
        neg = np.unpackbits(payload[f"{name}.sign"], count=k, bitorder="little").view(bool)
        if idx is None:
            return np.where(neg, -m, m).astype(np.float32, copy=False)
        out = np.zeros(n, dtype=np.float32)
        if k:
            out[idx] = np.where(neg, -m, m)
        return out


@dataclass(frozen=True)
class Stc(SparseTernary):
    """``stc:<f>``: keeps ``topk_count(n, f)`` entries of every tensor (``stc`` = 0.01)."""

    name = "stc"
    forms = "stc:<fraction in (0, 1]> (e.g. stc:0.09)"

    def plan(self, template: Template) -> dict[str, int]:
        return {name: topk_count(math.prod(s), self.fraction) for name, s in template.items()}
