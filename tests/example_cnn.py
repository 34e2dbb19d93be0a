"""The example app's CNN (examples/quickstart-energy, ``quickstart_energy.task.Net``) and its FLOPs
counted by hand, for the tests (and the benchmarks) that meter it.

FLOP convention (docs/meters.md, "What the mod counts", as ``torch.utils.flop_counter`` counts):
2 FLOPs per multiply-add of a convolution or matrix product, per sample (a convolution:
2 x Cin x k^2 x Cout x Hout x Wout; a linear layer: 2 x in x out); bias additions, BatchNorm,
ReLU, pooling, dropout and the loss count 0. Backward = 2 x forward (input and weight gradients),
except that the first layer's input gradient is not computed. Each optimizer step adds 2 FLOPs
per trainable parameter.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart-energy"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

from quickstart_energy.task import Net  # noqa: E402

# per sample; the convolutions keep 32x32 then (after a 2x2 pool) 16x16 maps, padding 1
CONV1 = 2 * 3 * 3**2 * 16 * 32 * 32
CONV2 = 2 * 16 * 3**2 * 32 * 16 * 16
FC = 2 * (32 * 8 * 8) * 10
FORWARD = CONV1 + CONV2 + FC
BACKWARD = 2 * FORWARD - CONV1  # no input gradient for the first layer
PARAMS = (16 * 3 * 9 + 16) + 2 * 16 + (32 * 16 * 9 + 32) + 2 * 32 + (32 * 8 * 8 * 10 + 10)


def train_flops(samples: int, batch: int, epochs: int) -> int:
    """FLOPs of ``epochs`` epochs of minibatch training on ``samples`` samples, batches of
    ``batch`` (the last one smaller), one optimizer step per batch."""
    batches = [min(batch, samples - i) for i in range(0, samples, batch)]
    return epochs * sum(b * (FORWARD + BACKWARD) + 2 * PARAMS for b in batches)


__all__ = ["BACKWARD", "EXAMPLE", "FORWARD", "Net", "PARAMS", "train_flops"]
