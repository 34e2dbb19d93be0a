"""``none``: a float32 copy of every tensor (exact)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedenergy.codecs.base import Codec
from fedenergy.codecs.checks import Layout, Payload, check_finite
from fedenergy.codecs.params import no_parameter

_F32 = np.dtype(np.float32)


@dataclass(frozen=True)
class Uncompressed(Codec):
    """``none``: part ``.f32`` (float32, n entries) per tensor."""

    name = "none"
    forms = "none"
    downlink = True

    @classmethod
    def parse(cls, arg: str | None) -> Uncompressed:
        no_parameter(cls.name, arg)
        return cls()

    def label(self) -> str:
        return self.name

    def error_bound(self) -> str:
        return "exact"

    def tensor_layout(self, name: str, shape: tuple[int, ...], plan: Any) -> Layout:
        return {f"{name}.f32": (_F32, math.prod(shape))}

    def encode_tensor(
        self,
        name: str,
        flat: np.ndarray,
        shape: tuple[int, ...],
        plan: Any,
        rng: np.random.Generator | None,
    ) -> Payload:
        return {f"{name}.f32": flat.copy()}

    def check_tensor(self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any) -> None:
        check_finite(f"{name}.f32", payload[f"{name}.f32"])

    def decode_tensor(
        self, payload: Mapping, name: str, shape: tuple[int, ...], plan: Any
    ) -> np.ndarray:
        return payload[f"{name}.f32"].copy()
