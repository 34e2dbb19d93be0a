"""A codec written the way a user would write one, outside the fedenergy package.

``tests.user_codec.halfsign:<block>``: scaled sign compression with error feedback (as in
EF-SignSGD, Karimireddy et al., ICML 2019): one sign bit per entry and one float32 magnitude,
the mean |x|, per block of ``block`` consecutive entries.  Its dotted name lets every process
(the Ray workers of a simulation included) load it from its label: ``parse_codec`` imports this
module, whose import registers the codec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedenergy.codecs import Codec, Layout, Payload, PayloadError, register_codec
from fedenergy.codecs.checks import check_scale

_DEFAULT_BLOCK = 256


@dataclass(frozen=True)
class HalfSign(Codec):
    """Parts ``.mag`` (float32, ceil(n / block)) and ``.sign`` (uint8, ceil(n / 8), bit 1 =
    negative) per tensor."""

    block: int = _DEFAULT_BLOCK  # entries that share one magnitude

    name = "tests.user_codec.halfsign"
    forms = "tests.user_codec.halfsign:<block size >= 1> (e.g. tests.user_codec.halfsign:64)"
    error_feedback = True

    def __post_init__(self) -> None:
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"block must be a positive int, got {self.block!r}")

    @classmethod
    def parse(cls, arg: str | None) -> HalfSign:
        if arg is None:
            return cls()
        try:
            block = int(arg)
        except ValueError:
            raise ValueError(f"halfsign block {arg!r} is not an integer") from None
        if block < 1:
            raise ValueError(f"halfsign block must be >= 1, got {block}")
        return cls(block=block)

    def label(self) -> str:
        return f"{self.name}:{self.block}"

    def error_bound(self) -> str:
        return (
            "every entry decodes to sign(x) * mean|x| of its block, so |err| <= max|x| of the "
            "block; the error goes to the residual"
        )

    def tensor_layout(self, name: str, shape: tuple[int, ...], plan: Any) -> Layout:
        n = math.prod(shape)
        u8, f32 = np.dtype(np.uint8), np.dtype(np.float32)
        return {f"{name}.mag": (f32, -(-n // self.block)), f"{name}.sign": (u8, -(-n // 8))}

    def encode_tensor(
        self,
        name: str,
        flat: np.ndarray,
        shape: tuple[int, ...],
        plan: Any,
        rng: np.random.Generator | None,
    ) -> Payload:
        n = flat.size
        starts = np.arange(0, n, self.block)
        absx = np.abs(flat.astype(np.float64))
        sums = np.add.reduceat(absx, starts) if n else np.zeros(0)
        counts = np.diff(np.append(starts, n))
        return {
            f"{name}.mag": (sums / np.maximum(counts, 1)).astype(np.float32),
            f"{name}.sign": np.packbits(flat < 0, bitorder="little"),
        }

    def check_tensor(self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any) -> None:
        n = math.prod(shape)
        check_scale(f"{name}.mag", payload[f"{name}.mag"])
        sign = payload[f"{name}.sign"]
        if n % 8 and int(sign[-1]) >> (n % 8):
            raise PayloadError(f"'{name}.sign': non-zero padding bits after {n} signs")

    def decode_tensor(
        self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any
    ) -> np.ndarray:
        n = math.prod(shape)
        mag = np.repeat(payload[f"{name}.mag"], self.block)[:n]
        neg = np.unpackbits(payload[f"{name}.sign"], count=n, bitorder="little").view(bool)
        return np.where(neg, -mag, mag).astype(np.float32, copy=False)


register_codec(HalfSign.name, HalfSign)
