"""Partitions through Flower Datasets: IID and Dirichlet(alpha) label skew (Hsu et al., 2019).

The built-in tasks' data is embedded or generated (no hub is reachable), so their labels become
a local ``datasets.Dataset`` (an ``index`` and a ``label`` column) that a ``flwr_datasets``
partitioner splits, as a Flower app splits a hub data set:

- ``iid``: the rows shuffled with the seed (``Dataset.shuffle``, as ``FederatedDataset`` shuffles
  before partitioning), then ``IidPartitioner``'s equal contiguous shards (with more partitions
  than rows, the first ones hold a row each, the others none);
- ``dirichlet``: ``DirichletPartitioner(partition_by="label", alpha, min_partition_size, seed)``:
  per class, shares across partitions ~ Dir(alpha) (its docstring cites Yurochkin et al., 2019,
  arXiv:1905.12022, for the sampling). It redraws (up to 10 times) until every
  partition holds ``min_partition_size`` rows; where no draw does (many nodes, small alpha), a
  draw without that minimum is topped up by moving random rows from the largest partitions, so
  that no simulated node is left without data. It needs fewer partitions than samples.
- ``sampled``: every partition draws ``max(1, rows // partitions)`` rows uniformly *with
  replacement*, from its own random stream (seed, partition id), so any number of partitions
  holds data and a partition is made without the others. Meant for scale benchmarks (100,000
  nodes over the digits pool of 1,437 rows, where IID leaves most partitions empty); the
  partitions overlap and do not cover the pool. flwr-datasets has no partitioner that samples
  with replacement, so this one is ours (and imports neither ``datasets`` nor
  ``flwr_datasets``).

``datasets`` and ``flwr_datasets`` are imported when a partition is first made (about half a
second per process), not when fedenergy is imported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

PARTITIONERS = ("iid", "dirichlet", "sampled")
INDEX, LABEL = "index", "label"  # the columns of the label data set


def make_partitioner(
    name: str, num_partitions: int, alpha: float, seed: int, min_size: int = 0
) -> Partitioner:
    """The ``flwr_datasets`` partitioner a partitioner name stands for (no data set assigned)."""
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

    if name == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if name == "dirichlet":
        if alpha <= 0:
            raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
        return DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by=LABEL,
            alpha=float(alpha),
            min_partition_size=min_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    raise ValueError(f"unknown partitioner {name!r}; choose one of {', '.join(PARTITIONERS)}")


@dataclass
class Partitioning:
    """The partitions of one label array: row indices, one partition at a time.

    Either a partitioner with the label data set assigned answers (``load_partition``, as a
    Flower app calls it), or, after a Dirichlet top-up, the index arrays it produced, or (the
    ``sampled`` partitioner) each partition draws its rows from ``sampled_rows`` rows."""

    num_partitions: int
    partitioner: Partitioner | None = None
    fixed: list[np.ndarray] | None = None
    empty_from: int | None = None  # IID over fewer rows than partitions: these hold none
    sampled_rows: int | None = None  # sampled: rows to draw from, with replacement
    seed: int = 0  # sampled: each partition's stream is (seed, partition id)
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def indices(self, partition_id: int) -> np.ndarray:
        """Row indices (into the label array) of partition ``partition_id``."""
        if not 0 <= partition_id < self.num_partitions:
            raise ValueError(f"partition {partition_id} of {self.num_partitions} does not exist")
        if self.fixed is not None:
            return self.fixed[partition_id]
        if self.sampled_rows is not None:
            size = max(1, self.sampled_rows // self.num_partitions)
            rng = np.random.default_rng([self.seed, partition_id])
            return rng.integers(0, self.sampled_rows, size, dtype=np.int64)
        if self.empty_from is not None and partition_id >= self.empty_from:
            return np.zeros(0, dtype=np.int64)  # datasets' shard() refuses a shard past the end
        if partition_id not in self._cache:
            part = self.partitioner.load_partition(partition_id)
            self._cache[partition_id] = np.asarray(part[INDEX], dtype=np.int64)
        return self._cache[partition_id]

    def all(self) -> list[np.ndarray]:
        """Every partition's row indices, in partition order."""
        return [self.indices(p) for p in range(self.num_partitions)]


def label_dataset(labels: np.ndarray):
    """A local ``datasets.Dataset`` of ``labels`` with their row index (no download)."""
    from datasets import Dataset

    labels = np.asarray(labels)
    return Dataset.from_dict({INDEX: np.arange(len(labels), dtype=np.int64), LABEL: labels})


def partitioning(
    labels: np.ndarray,
    num_partitions: int,
    partitioner: str,
    alpha: float,
    seed: int,
    min_size: int = 2,
) -> Partitioning:
    """Partition ``labels`` with the named partitioner (see the module docstring); a Dirichlet
    partition gives every partition at least ``min_size`` rows when there are enough."""
    if partitioner not in PARTITIONERS:
        make_partitioner(partitioner, num_partitions, alpha, seed)  # raises, naming the choices
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, got {num_partitions}")
    if partitioner == "sampled":
        if len(labels) == 0:
            raise ValueError("sampled partitioning of 0 rows: there is nothing to draw from")
        return Partitioning(num_partitions, sampled_rows=len(labels), seed=seed)
    ds = label_dataset(labels)
    if partitioner == "iid":
        part = make_partitioner("iid", num_partitions, alpha, seed)
        part.dataset = ds.shuffle(seed=seed)
        # IidPartitioner's contiguous shards give the first len(ds) partitions one row each
        empty = len(ds) if num_partitions > len(ds) else None
        return Partitioning(num_partitions, part, empty_from=empty)
    if num_partitions > len(ds):
        raise ValueError(
            f"dirichlet partitioning of {len(ds)} samples into {num_partitions} partitions: "
            "flwr-datasets' DirichletPartitioner needs fewer partitions than samples "
            "(use the iid partitioner or fewer nodes)"
        )
    need = min(min_size, len(ds) // num_partitions)
    part = make_partitioner("dirichlet", num_partitions, alpha, seed, min_size=need)
    part.dataset = ds
    try:
        with warnings.catch_warnings():  # it warns on every redraw; the outcome is what counts
            warnings.simplefilter("ignore", UserWarning)
            part.load_partition(0)  # draws the whole assignment
        return Partitioning(num_partitions, part)
    except ValueError:  # no draw in 10 gave every partition `need` rows
        pass
    part = make_partitioner("dirichlet", num_partitions, alpha, seed, min_size=0)
    part.dataset = ds
    parts = [list(ix) for ix in Partitioning(num_partitions, part).all()]
    rng = np.random.default_rng(seed)
    for p in range(num_partitions):
        while len(parts[p]) < need:
            donor = max(range(num_partitions), key=lambda q: len(parts[q]))
            parts[p].append(parts[donor].pop(int(rng.integers(len(parts[donor])))))
    return Partitioning(num_partitions, fixed=[np.asarray(ix, dtype=np.int64) for ix in parts])


def partition_indices(
    labels: np.ndarray, num_partitions: int, partitioner: str, alpha: float, seed: int
) -> list[np.ndarray]:
    """Every partition's row indices (``partitioning(...).all()``)."""
    return partitioning(labels, num_partitions, partitioner, alpha, seed).all()
