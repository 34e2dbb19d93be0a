"""Selectors: who trains this round. Each is a small object with one method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Selector(Protocol):
    def select(self, server_round: int, candidates: Sequence[int], k: int) -> list[int]:
        """Choose ``k`` node ids among ``candidates`` (given in a stable order, by partition
        id, so that a seed means the same devices in every run) for ``server_round``."""
        ...


@dataclass(frozen=True)
class RandomSelector:
    """Uniform sampling without replacement (FedAvg's baseline), deterministic per seed+round."""

    seed: int = 0
    stream: int = 0  # separate streams for train and evaluate selections

    def select(self, server_round: int, candidates: Sequence[int], k: int) -> list[int]:
        ordered = list(candidates)
        k = min(k, len(ordered))
        rng = np.random.default_rng([self.seed, self.stream, server_round])
        picks = rng.choice(len(ordered), size=k, replace=False)
        return [ordered[i] for i in sorted(picks.tolist())]
