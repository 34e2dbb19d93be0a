"""What every task provides: a model, per-partition data, server test data, train and test loops."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    """Features and labels of one data split (float32 features, int64 labels)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class DataConfig:
    """How a task's data is generated and split across simulated nodes."""

    num_partitions: int
    seed: int = 0
    partitioner: str = "dirichlet"
    alpha: float = 0.5


def train_epochs(
    model: torch.nn.Module,
    data: Split,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    proximal_mu: float = 0.0,
) -> tuple[float, int]:
    """Minibatch SGD, with FedProx's proximal term (mu/2)||w - w_start||^2 when mu > 0.
    Returns (mean loss of the last epoch, optimizer steps taken)."""
    gen = torch.Generator().manual_seed(seed)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    steps, last = 0, 0.0
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, len(data), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
            if proximal_mu > 0:
                pairs = zip(model.parameters(), anchor, strict=True)
                prox = sum(((p - s) ** 2).sum() for p, s in pairs)
                (loss + 0.5 * proximal_mu * prox).backward()
            else:
                loss.backward()
            opt.step()
            steps += 1
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        last = total / max(seen, 1)
    return last, steps


def evaluate(model: torch.nn.Module, data: Split) -> tuple[float, float]:
    """Return (mean cross-entropy loss, accuracy) on ``data``."""
    if len(data) == 0:
        return 0.0, 0.0
    model.eval()
    with torch.no_grad():
        out = model(data.x)
        loss = torch.nn.functional.cross_entropy(out, data.y)
    return float(loss), float((out.argmax(1) == data.y).float().mean())


def union_of_partitions(
    splits: Callable[[int, DataConfig], tuple[Split, Split]], cfg: DataConfig, which: int
) -> Split:
    """Every partition's train (``which=0``) or test (``which=1``) split, concatenated."""
    parts = [splits(k, cfg)[which] for k in range(cfg.num_partitions)]
    return Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
