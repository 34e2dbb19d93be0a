"""``qsgd:<s>``: QSGD stochastic quantisation (Alistarh et al., NeurIPS 2017) with max-norm
scaling and ``s`` levels; unbiased; levels bit-packed (2 bits for s=1, 4 bits for s<=7, else
int8)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedenergy.codecs.base import Codec
from fedenergy.codecs.checks import Layout, Payload, PayloadError, check_scale

MAX_QSGD_LEVELS = 127  # signed levels must fit in int8
_DEFAULT_LEVELS = 16
_F32 = np.dtype(np.float32)
_I8 = np.dtype(np.int8)
_U8 = np.dtype(np.uint8)


def level_bits(levels: int) -> int:
    """Bits per signed level: 2 for s = 1 ({-1,0,1}), 4 for s <= 7, else 8 (plain int8)."""
    if levels == 1:
        return 2
    if levels <= 7:
        return 4
    return 8


def _pack(levels: np.ndarray, bits: int) -> np.ndarray:
    """Pack signed levels into uint8, little-end first, offset 2**(bits-1); pad with level 0."""
    per = 8 // bits
    offset = 1 << (bits - 1)
    n = levels.size
    padded = np.full(-(-n // per) * per, offset, dtype=np.uint8)
    padded[:n] = (levels.astype(np.int16) + offset).astype(np.uint8)
    groups = padded.reshape(-1, per)
    out = np.zeros(groups.shape[0], dtype=np.uint8)
    for j in range(per):
        out |= groups[:, j] << np.uint8(bits * j)
    return out


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`_pack` without the offset removed: uint8 values, length len*per."""
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    shifts = (np.arange(per, dtype=np.uint8) * np.uint8(bits))[None, :]
    return ((packed[:, None] >> shifts) & mask).reshape(-1)


def _codes(lvl: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned codes (uint8, one per entry incl. padding) and the signed level of each code."""
    if bits == 8:
        codes = lvl.view(np.uint8)
        levels = np.arange(256, dtype=np.float64)
        levels[128:] -= 256  # two's complement
    else:
        codes = _unpack(lvl, bits)
        levels = np.arange(1 << bits, dtype=np.float64) - (1 << (bits - 1))
    return codes, levels


@dataclass(frozen=True)
class Qsgd(Codec):
    """``qsgd:<s>``: parts ``.norm`` (float32, 1: max |x|) and ``.lvl`` (the signed levels:
    int8, n entries, for s >= 8; else packed into uint8) per tensor."""

    levels: int = _DEFAULT_LEVELS  # quantisation levels s, 1..127

    name = "qsgd"
    forms = f"qsgd:<levels 1..{MAX_QSGD_LEVELS}> (e.g. qsgd:16)"

    def __post_init__(self) -> None:
        lev = self.levels
        if isinstance(lev, (bool, np.bool_)) or not isinstance(lev, (int, np.integer)):
            raise ValueError(f"levels must be an int, got {lev!r}")
        lev = int(lev)
        if not 1 <= lev <= MAX_QSGD_LEVELS:
            raise ValueError(f"levels must be in 1..{MAX_QSGD_LEVELS}, got {lev}")
        object.__setattr__(self, "levels", lev)

    @classmethod
    def parse(cls, arg: str | None) -> Qsgd:
        """``qsgd`` (16 levels) or ``qsgd:<levels>``."""
        if arg is None:
            return cls()
        try:
            lev = int(arg)
        except ValueError:
            raise ValueError(f"qsgd levels {arg!r} is not an integer") from None
        if not 1 <= lev <= MAX_QSGD_LEVELS:
            raise ValueError(f"qsgd levels must be in 1..{MAX_QSGD_LEVELS}, got {lev}")
        return cls(levels=lev)

    def label(self) -> str:
        return f"qsgd:{self.levels}"

    def error_bound(self) -> str:
        s = self.levels
        return (
            f"unbiased (E[decode] = x); |err| <= max|x|/{s}, variance <= (max|x|/{s})**2/4; "
            "a non-zero output has the sign of x"
        )

    def tensor_layout(self, name: str, shape: tuple[int, ...], plan: Any) -> Layout:
        n = math.prod(shape)
        bits = level_bits(self.levels)
        lvl = (_I8, n) if bits == 8 else (_U8, -(-n * bits // 8))
        return {f"{name}.norm": (_F32, 1), f"{name}.lvl": lvl}

    def encode_tensor(
        self,
        name: str,
        flat: np.ndarray,
        shape: tuple[int, ...],
        plan: Any,
        rng: np.random.Generator | None,
    ) -> Payload:
        """Stochastic rounding of ``|x| / max|x| * s`` to a neighbouring level (``rng``: a fresh
        ``np.random.default_rng()`` if None)."""
        if rng is None:
            rng = np.random.default_rng()
        n = flat.size
        s = self.levels
        norm = float(np.max(np.abs(flat))) if n else 0.0
        if norm > 0:
            r = np.abs(flat.astype(np.float64)) / norm * s  # in [0, s]
            low = np.floor(r)
            lvl = low + (rng.random(n) < (r - low))
            lvl = np.minimum(lvl, s) * np.sign(flat)
            signed = lvl.astype(np.int8)
        else:
            signed = np.zeros(n, dtype=np.int8)
        bits = level_bits(s)
        packed = signed if bits == 8 else _pack(signed, bits)
        return {f"{name}.norm": np.array([norm], dtype=np.float32), f"{name}.lvl": packed}

    def check_tensor(self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any) -> None:
        n = math.prod(shape)
        check_scale(f"{name}.norm", payload[f"{name}.norm"])
        s = self.levels
        codes, levels = _codes(payload[f"{name}.lvl"], level_bits(s))
        if not (np.abs(levels) <= s)[codes[:n]].all():
            raise PayloadError(f"'{name}.lvl': level magnitude exceeds s={s}")
        if (levels[codes[n:]] != 0).any():
            raise PayloadError(f"'{name}.lvl': non-zero padding after {n} entries")

    def decode_tensor(
        self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any
    ) -> np.ndarray:
        n = math.prod(shape)
        s = self.levels
        codes, levels = _codes(payload[f"{name}.lvl"], level_bits(s))
        norm = float(payload[f"{name}.norm"][0])
        table = (levels * (norm / s)).astype(np.float32)  # level * norm / s, computed in float64
        return table[codes[:n]]
