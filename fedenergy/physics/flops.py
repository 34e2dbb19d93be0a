"""Hardware-independent work: FLOPs of local training and evaluation, counted once per shape.

The count uses ``torch.utils.flop_counter.FlopCounterMode`` on ONE forward+backward pass of the
model for a given input shape; the result is cached by (model signature, input shape), so a
training call costs one dictionary lookup per distinct batch shape, not a counted pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode


def model_signature(model: torch.nn.Module) -> tuple:
    """A hashable description of a model's architecture (class names and parameter shapes)."""
    mods = tuple(type(m).__name__ for m in model.modules())
    shapes = tuple((n, tuple(p.shape)) for n, p in model.named_parameters())
    return mods, shapes


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class FlopCache:
    """Memoized FLOP counts per (model signature, input shape, pass kind)."""

    counts: dict[tuple, int] = field(default_factory=dict)
    counted: int = 0  # how many real counting passes ran (for tests and diagnostics)

    def _count(self, model: torch.nn.Module, x: torch.Tensor, backward: bool) -> int:
        key = (model_signature(model), tuple(x.shape), str(x.dtype), backward)
        if key not in self.counts:
            probe = torch.zeros_like(x)
            with FlopCounterMode(display=False) as counter:
                out = model(probe)
                if backward:
                    out.float().sum().backward()
            if backward:
                model.zero_grad(set_to_none=True)
            self.counts[key] = int(counter.get_total_flops())
            self.counted += 1
        return self.counts[key]

    def train_step(self, model: torch.nn.Module, x: torch.Tensor) -> int:
        """FLOPs of one forward+backward pass plus the SGD update (2 FLOPs per parameter)."""
        return self._count(model, x, backward=True) + 2 * num_parameters(model)

    def forward(self, model: torch.nn.Module, x: torch.Tensor) -> int:
        """FLOPs of one forward pass."""
        return self._count(model, x, backward=False)

    def training(
        self, model: torch.nn.Module, sample: torch.Tensor, n: int, batch_size: int, epochs: int
    ) -> int:
        """FLOPs of ``epochs`` passes of minibatch SGD over ``n`` samples shaped like ``sample``."""
        if n == 0 or epochs == 0:
            return 0
        full, rest = divmod(n, batch_size)
        row = sample[:1]
        per_epoch = full * self.train_step(model, row.expand(batch_size, *row.shape[1:]))
        if rest:
            per_epoch += self.train_step(model, row.expand(rest, *row.shape[1:]))
        return epochs * per_epoch

    def evaluation(self, model: torch.nn.Module, sample: torch.Tensor, n: int) -> int:
        """FLOPs of one forward pass over ``n`` samples."""
        if n == 0:
            return 0
        row = sample[:1]
        return self.forward(model, row.expand(n, *row.shape[1:]))
