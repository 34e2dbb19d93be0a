"""Which tensors every codec sends raw: normalisation statistics and counters.

BatchNorm's ``running_mean``, ``running_var`` and ``num_batches_tracked`` are buffers, not
trainable weights: training does not follow a gradient on them, each client overwrites them
with its own estimate.  Sparsifying or quantising them is wrong twice over: the error-feedback
residual of top-k/STC accumulates what was held back and later overshoots (an aggregated
``running_var`` below zero turns evaluation into NaN), and a dropped entry leaves a stale
statistic.  They are also small (two floats per channel).  So every codec sends a tensor whose
last name component is one of :data:`RAW_BUFFERS` as a float32 copy, part ``.raw``, counted
in the payload's bytes like any other part; the codec's own format applies to every other
tensor.  The rule keys on names, not sizes, so that small trainable tensors (biases) stay
compressed and a model without such buffers is encoded exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedenergy.codecs.checks import Layout, Payload, check_finite

# PyTorch's names for the running statistics of BatchNorm/InstanceNorm (track_running_stats)
RAW_BUFFERS: tuple[str, ...] = ("running_mean", "running_var", "num_batches_tracked")
RAW_PART = "raw"
_F32 = np.dtype(np.float32)


def travels_raw(name: str) -> bool:
    """True when the tensor ``name`` (a state-dict key) is sent as a float32 copy by every
    codec: its last dotted component is one of :data:`RAW_BUFFERS`."""
    return name.rpartition(".")[2] in RAW_BUFFERS


def raw_layout(name: str, shape: tuple[int, ...]) -> Layout:
    """``{f"{name}.raw": (float32, prod(shape))}``."""
    return {f"{name}.{RAW_PART}": (_F32, math.prod(shape))}


def encode_raw(name: str, flat: np.ndarray) -> Payload:
    """The float32 copy of a raw tensor (``flat``: finite float32 entries)."""
    return {f"{name}.{RAW_PART}": np.array(flat, dtype=np.float32, copy=True)}


def check_raw(payload: Mapping, name: str) -> None:
    """A raw part must be finite (its dtype and length are already checked)."""
    check_finite(f"{name}.{RAW_PART}", payload[f"{name}.{RAW_PART}"])


def decode_raw(payload: Mapping, name: str) -> np.ndarray:
    """The flat float32 copy of a checked raw part."""
    return np.array(payload[f"{name}.{RAW_PART}"], dtype=np.float32, copy=True)
