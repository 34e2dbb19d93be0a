"""``fp16``: IEEE half precision, saturating at +-65504 (2x smaller)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedenergy.codecs.base import Codec
from fedenergy.codecs.checks import Layout, Payload, check_finite
from fedenergy.codecs.params import no_parameter

_F16 = np.dtype(np.float16)
_FP16_MAX = float(np.finfo(np.float16).max)  # 65504


@dataclass(frozen=True)
class Fp16(Codec):
    """``fp16``: part ``.f16`` (float16, n entries) per tensor."""

    name = "fp16"
    forms = "fp16"
    downlink = True

    @classmethod
    def parse(cls, arg: str | None) -> Fp16:
        no_parameter(cls.name, arg)
        return cls()

    def label(self) -> str:
        return self.name

    def error_bound(self) -> str:
        return (
            "relative error <= 2**-11 for |x| in [2**-14, 65504], absolute error <= 2**-25 "
            "below; saturates to +-65504 above"
        )

    def tensor_layout(self, name: str, shape: tuple[int, ...], plan: Any) -> Layout:
        return {f"{name}.f16": (_F16, math.prod(shape))}

    def encode_tensor(
        self,
        name: str,
        flat: np.ndarray,
        shape: tuple[int, ...],
        plan: Any,
        rng: np.random.Generator | None,
    ) -> Payload:
        return {f"{name}.f16": np.clip(flat, -_FP16_MAX, _FP16_MAX).astype(np.float16)}

    def check_tensor(self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any) -> None:
        check_finite(f"{name}.f16", payload[f"{name}.f16"])

    def decode_tensor(
        self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any
    ) -> np.ndarray:
        return payload[f"{name}.f16"].astype(np.float32)
