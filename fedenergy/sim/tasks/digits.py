"""scikit-learn's embedded 8x8 digits (1,797 images, 10 classes) with a small MLP; the pool left
after the server's hold-out is split across the nodes by flwr-datasets (:mod:`.partition`)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from fedenergy.sim.tasks.base import DataConfig, Split
from fedenergy.sim.tasks.partition import Partitioning, partitioning

NAME = "digits"
SERVER_TEST_FRACTION = 0.2
LOCAL_TEST_FRACTION = 0.2


def make_model() -> torch.nn.Module:
    """64 -> 32 -> 10 MLP (2,410 parameters)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


@lru_cache(maxsize=4)
def _pool(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_pool, y_pool, x_server_test, y_server_test), a stratified hold-out chosen by ``seed``."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    rng = np.random.default_rng(seed + 7919)
    test = np.zeros(len(y), dtype=bool)
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        test[idx[: int(round(SERVER_TEST_FRACTION * len(idx)))]] = True
    return x[~test], y[~test], x[test], y[test]


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(torch.from_numpy(x), torch.from_numpy(y))


@lru_cache(maxsize=8)
def _parts(cfg: DataConfig) -> Partitioning:
    """The pool's labels partitioned by flwr-datasets (:mod:`fedenergy.sim.tasks.partition`)."""
    _, y, _, _ = _pool(cfg.seed)
    return partitioning(y, cfg.num_partitions, cfg.partitioner, cfg.alpha, cfg.seed)


def client_data(partition_id: int, cfg: DataConfig) -> tuple[Split, Split]:
    """(train, local test) of one partition of the pool."""
    x, y, _, _ = _pool(cfg.seed)
    idx = _parts(cfg).indices(partition_id)
    cut = len(idx) - int(LOCAL_TEST_FRACTION * len(idx)) if len(idx) >= 5 else len(idx)
    train, test = idx[:cut], idx[cut:] if cut < len(idx) else idx
    return _split(x[train], y[train]), _split(x[test], y[test])


def server_test_data(cfg: DataConfig) -> Split:
    """The held-out set the server evaluates the global model on each round."""
    _, _, xt, yt = _pool(cfg.seed)
    return _split(xt, yt)


def pooled_train_data(cfg: DataConfig) -> Split:
    """All training data of all partitions together (the centralized baseline's data)."""
    x, y, _, _ = _pool(cfg.seed)
    return _split(x, y)
