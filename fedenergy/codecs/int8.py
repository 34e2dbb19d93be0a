"""``int8`` / ``int8:channel``: affine 8-bit quantisation, one (scale, zero) pair per tensor or
per output channel (axis 0 of tensors with ndim >= 2), ~4x smaller."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedenergy.codecs.base import Codec
from fedenergy.codecs.checks import Layout, Payload, check_finite, check_scale

_I8 = np.dtype(np.int8)
_F32 = np.dtype(np.float32)
_F32_MAX = float(np.finfo(np.float32).max)
_CHUNK = 1 << 16  # entries per block when dequantising


def _int8_encode(x: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine int8: x ~= zero + scale * (q + 128); scale rounded *up* to float32."""
    x2 = x.reshape(channels, -1).astype(np.float64) if channels else x.reshape(0, 0)
    if x2.shape[1] == 0:
        zeros = np.zeros(channels, dtype=np.float32)
        return np.zeros(x.size, dtype=np.int8), zeros, zeros.copy()
    lo = x2.min(axis=1)
    hi = x2.max(axis=1)
    s64 = (hi - lo) / 255.0
    scale = s64.astype(np.float32)
    low = scale.astype(np.float64) < s64
    scale[low] = np.nextafter(scale[low], np.float32(np.inf))  # 255 * scale >= hi - lo
    zero = lo.astype(np.float32)  # exact: lo is a float32 value
    safe = np.where(scale > 0, scale, 1.0).astype(np.float64)
    k = np.rint((x2 - zero.astype(np.float64)[:, None]) / safe[:, None])
    k = np.clip(k, 0, 255)
    k[scale == 0] = 0
    q = (k - 128).astype(np.int8).reshape(-1)
    return q, scale, zero


@dataclass(frozen=True)
class Int8(Codec):
    """``int8``: parts ``.q`` (int8, n), ``.scale`` and ``.zero`` (float32, c each), with
    ``c = shape[0]`` for ``int8:channel`` on tensors with ndim >= 2, else 1."""

    per_channel: bool = False  # one (scale, zero) pair per output channel (axis 0)

    name = "int8"
    forms = "int8, int8:channel"
    downlink = True

    def __post_init__(self) -> None:
        if not isinstance(self.per_channel, (bool, np.bool_)):
            raise ValueError(f"per_channel must be a bool, got {self.per_channel!r}")
        object.__setattr__(self, "per_channel", bool(self.per_channel))

    @classmethod
    def parse(cls, arg: str | None) -> Int8:
        """``int8`` (= ``int8:tensor``) or ``int8:channel``."""
        if arg is None or arg == "tensor":
            return cls()
        if arg == "channel":
            return cls(per_channel=True)
        raise ValueError("int8 parameter must be 'channel' (or 'tensor')")

    def label(self) -> str:
        return "int8:channel" if self.per_channel else "int8"

    def error_bound(self) -> str:
        per = "output channel" if self.per_channel else "tensor"
        return (
            f"|err| <= scale/2 with scale = (max - min)/255 of its {per} (+ float32 rounding); "
            "constant tensors and channels exact"
        )

    def _channels(self, shape: tuple[int, ...]) -> int:
        return shape[0] if (self.per_channel and len(shape) >= 2) else 1

    def tensor_layout(self, name: str, shape: tuple[int, ...], plan: Any) -> Layout:
        c = self._channels(shape)
        n = math.prod(shape)
        return {f"{name}.q": (_I8, n), f"{name}.scale": (_F32, c), f"{name}.zero": (_F32, c)}

    def encode_tensor(
        self,
        name: str,
        flat: np.ndarray,
        shape: tuple[int, ...],
        plan: Any,
        rng: np.random.Generator | None,
    ) -> Payload:
        q, scale, zero = _int8_encode(flat, self._channels(shape))
        return {f"{name}.q": q, f"{name}.scale": scale, f"{name}.zero": zero}

    def check_tensor(self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any) -> None:
        check_scale(f"{name}.scale", payload[f"{name}.scale"])
        check_finite(f"{name}.zero", payload[f"{name}.zero"])

    def decode_tensor(
        self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any
    ) -> np.ndarray:
        # value = zero + scale * (q + 128), evaluated in float64 once per code via a 256-entry
        # table per channel; the lookup keeps working memory at ~5 bytes per entry.
        n = math.prod(shape)
        scale = payload[f"{name}.scale"].astype(np.float64)
        zero = payload[f"{name}.zero"].astype(np.float64)
        c = scale.size
        out = np.empty(n, dtype=np.float32)
        if n == 0:
            return out
        codes = (payload[f"{name}.q"].view(np.uint8) ^ np.uint8(0x80)).reshape(c, -1)  # q + 128
        rows = out.reshape(c, -1)
        steps = np.arange(256, dtype=np.float64)
        for ch in range(c):
            table = np.clip(zero[ch] + scale[ch] * steps, -_F32_MAX, _F32_MAX).astype(np.float32)
            for start in range(0, rows.shape[1], _CHUNK):  # bounded temporaries
                rows[ch, start : start + _CHUNK] = table[codes[ch, start : start + _CHUNK]]
        return out
