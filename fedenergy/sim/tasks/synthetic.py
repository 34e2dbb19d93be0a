"""FedProx Synthetic(alpha, beta) (Li et al., MLSys 2020) with multinomial logistic regression.

Per device k: u_k ~ N(0, alpha), B_k ~ N(0, beta) (alpha, beta are standard deviations);
W_k ~ N(u_k, 1) (60x10), b_k ~ N(u_k, 1) (10); v_k ~ N(B_k, 1) (60);
x ~ N(v_k, Sigma) with Sigma_jj = j^-1.2; y = argmax softmax(x W_k + b_k).
Samples per device: int(lognormal(4, 2)) + 50 as in the reference generator, capped at
MAX_SAMPLES so that one heavy-tailed draw cannot dominate a small simulation. 90 % train, 10 % test.
Each partition is one generated device (the split is natural, so the partitioner is not used).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from fedenergy.sim.tasks.base import DataConfig, Split, union_of_partitions

NAME = "synthetic"
DIM, CLASSES = 60, 10
MAX_SAMPLES = 1000
ALPHA, BETA = 1.0, 1.0


def make_model() -> torch.nn.Module:
    """Multinomial logistic regression: one linear layer 60 -> 10."""
    torch.manual_seed(0)
    return torch.nn.Linear(DIM, CLASSES)


@lru_cache(maxsize=4096)
def _device(k: int, seed: int, alpha: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, k])
    n = min(int(rng.lognormal(4, 2)) + 50, MAX_SAMPLES)
    u, b_mean = rng.normal(0, alpha), rng.normal(0, beta)
    w = rng.normal(u, 1, (DIM, CLASSES))
    b = rng.normal(u, 1, CLASSES)
    v = rng.normal(b_mean, 1, DIM)
    sd = np.arange(1, DIM + 1, dtype=np.float64) ** -0.6  # sqrt(j^-1.2)
    x = rng.normal(v, sd, (n, DIM))
    y = np.argmax(x @ w + b, axis=1)
    return x.astype(np.float32), y.astype(np.int64)


def _splits(k: int, cfg: DataConfig) -> tuple[Split, Split]:
    x, y = _device(k, cfg.seed, ALPHA, BETA)
    cut = int(0.9 * len(y))
    t = lambda a, b: Split(torch.from_numpy(a), torch.from_numpy(b))  # noqa: E731
    return t(x[:cut], y[:cut]), t(x[cut:], y[cut:])


def client_data(partition_id: int, cfg: DataConfig) -> tuple[Split, Split]:
    """(train, local test) of generated device ``partition_id``."""
    return _splits(partition_id, cfg)


def server_test_data(cfg: DataConfig) -> Split:
    """Union of every device's 10 % test split."""
    return union_of_partitions(_splits, cfg, 1)


def pooled_train_data(cfg: DataConfig) -> Split:
    """Union of every device's training split."""
    return union_of_partitions(_splits, cfg, 0)
