"""Checks and parsers for codec parameters (shared by the codecs that take the same kind)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Self

import numpy as np

from fedenergy.codecs.base import Codec

DEFAULT_FRACTION = 0.01


def check_fraction(value: object) -> float:
    """A real number in (0, 1] as a float; ``ValueError`` otherwise (bools are not numbers)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"fraction must be a real number, got {value!r}")
    frac = float(value)
    if not (math.isfinite(frac) and 0.0 < frac <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {value!r}")
    return frac


def parse_fraction(name: str, arg: str | None) -> float:
    """The fraction in ``name:<arg>`` (``DEFAULT_FRACTION`` without a parameter)."""
    if arg is None:
        return DEFAULT_FRACTION
    try:
        frac = float(arg)
    except ValueError:
        raise ValueError(f"{name} fraction {arg!r} is not a number") from None
    if not (math.isfinite(frac) and 0.0 < frac <= 1.0):
        raise ValueError(f"{name} fraction must be in (0, 1], got {arg!r}")
    return frac


def no_parameter(name: str, arg: str | None) -> None:
    """``ValueError`` unless the codec text had no ``:`` part."""
    if arg is not None:
        raise ValueError(f"{name} takes no parameter")


@dataclass(frozen=True)
class FractionCodec(Codec):
    """A codec with one parameter, a fraction in (0, 1] (top-k, STC, STC-b): checked on
    construction, parsed from ``name:<fraction>`` (``DEFAULT_FRACTION`` without one), written
    back with ``repr`` so ``parse_codec(c.label()) == c``."""

    fraction: float = DEFAULT_FRACTION

    def __post_init__(self) -> None:
        object.__setattr__(self, "fraction", check_fraction(self.fraction))

    @classmethod
    def parse(cls, arg: str | None) -> Self:
        """``<name>`` or ``<name>:<fraction>``."""
        return cls(fraction=parse_fraction(cls.name, arg))

    def label(self) -> str:
        return f"{self.name}:{self.fraction!r}"
