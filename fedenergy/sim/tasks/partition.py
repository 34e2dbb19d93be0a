"""Deterministic partitioners: IID and Dirichlet(alpha) label skew (Hsu et al., 2019)."""

from __future__ import annotations

import numpy as np

PARTITIONERS = ("iid", "dirichlet")


def iid_partition(num_samples: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Shuffle indices with ``seed`` and deal them round-robin into ``num_partitions`` parts."""
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(order[p::num_partitions]) for p in range(num_partitions)]


def dirichlet_partition(
    labels: np.ndarray, num_partitions: int, alpha: float, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Label-skewed split: for each class, shares across partitions ~ Dir(alpha).

    Every partition receives at least ``min_size`` samples when enough samples exist (samples are
    moved from the largest partitions), so no simulated node is left without data.
    """
    if alpha <= 0:
        raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(num_partitions)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for p, chunk in enumerate(np.split(idx, cuts)):
            parts[p].extend(chunk.tolist())
    need = min(min_size, len(labels) // num_partitions)
    for p in range(num_partitions):
        while len(parts[p]) < need:
            donor = max(range(num_partitions), key=lambda q: len(parts[q]))
            parts[p].append(parts[donor].pop(int(rng.integers(len(parts[donor])))))
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def partition_indices(
    labels: np.ndarray, num_partitions: int, partitioner: str, alpha: float, seed: int
) -> list[np.ndarray]:
    """Dispatch to a partitioner by name."""
    if partitioner == "iid":
        return iid_partition(len(labels), num_partitions, seed)
    if partitioner == "dirichlet":
        return dirichlet_partition(labels, num_partitions, alpha, seed, min_size=2)
    raise ValueError(
        f"unknown partitioner {partitioner!r}; choose one of {', '.join(PARTITIONERS)}"
    )
