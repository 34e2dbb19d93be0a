"""Image data for the image tasks (:mod:`.cnn`, :mod:`.resnet`), rendered from scikit-learn's
embedded 8x8 digits: no download, learnable, and the same seed gives the same pixels.

Each 8x8 digit of the :mod:`.digits` pool (and of its server hold-out, chosen by the same seed)
is rendered once, with its own draws from a generator seeded by ``(seed, image size, split)``:

- upsampled (bilinear) to ``glyph`` x ``glyph`` pixels and pasted into a ``size`` x ``size``
  canvas at a random offset (a shift of up to ``(size - glyph) / 2`` pixels each way);
- with three channels, coloured: a random foreground colour over a random darker background,
  one pair per image (the colour carries no information about the class);
- plus Gaussian pixel noise (standard deviation ``NOISE``), then centred (``(v - 0.5) / 0.5``).

The pool's labels are split across the nodes by flwr-datasets' partitioners
(:mod:`.partition`), as the ``digits`` task splits them, so a partition holds the same digits
in both tasks, rendered larger.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from fedenergy.sim.tasks import digits
from fedenergy.sim.tasks.base import DataConfig, Split
from fedenergy.sim.tasks.partition import Partitioning, partitioning

NOISE = 0.1  # ASSUMPTION: pixel noise, enough that no two renderings of a digit are equal


@dataclass(frozen=True)
class Rendering:
    """How the 8x8 digits are drawn: canvas side, glyph side and channels."""

    size: int
    glyph: int
    channels: int


def render(x64: np.ndarray, style: Rendering, rng: np.random.Generator) -> np.ndarray:
    """``x64`` (n x 64 digits in [0, 1]) drawn as n x channels x size x size float32 images."""
    n = len(x64)
    glyphs = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(x64, dtype=np.float32)).reshape(n, 1, 8, 8),
        size=(style.glyph, style.glyph),
        mode="bilinear",
        align_corners=False,
    ).numpy()
    room = style.size - style.glyph
    offsets = rng.integers(0, room + 1, size=(n, 2))
    mask = np.zeros((n, 1, style.size, style.size), dtype=np.float32)
    for i, (r, c) in enumerate(offsets):
        mask[i, :, r : r + style.glyph, c : c + style.glyph] = glyphs[i]
    if style.channels == 1:
        img = mask
    else:
        fg = rng.uniform(0.6, 1.0, size=(n, style.channels, 1, 1)).astype(np.float32)
        bg = rng.uniform(0.0, 0.4, size=(n, style.channels, 1, 1)).astype(np.float32)
        img = bg + (fg - bg) * mask
    img = img + rng.normal(0.0, NOISE, size=img.shape).astype(np.float32)
    return ((img - 0.5) / 0.5).astype(np.float32)


@lru_cache(maxsize=8)
def pool(style: Rendering, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_pool, y_pool, x_server_test, y_server_test): the digits pool and hold-out of ``seed``
    rendered in ``style``."""
    x, y, xt, yt = digits._pool(seed)
    key = [seed, style.size, style.glyph, style.channels]
    train = render(x, style, np.random.default_rng([*key, 0]))
    test = render(xt, style, np.random.default_rng([*key, 1]))
    return train, y, test, yt


@lru_cache(maxsize=8)
def parts(cfg: DataConfig) -> Partitioning:
    """The pool's labels partitioned by flwr-datasets (as the ``digits`` task's)."""
    _, y, _, _ = digits._pool(cfg.seed)
    return partitioning(y, cfg.num_partitions, cfg.partitioner, cfg.alpha, cfg.seed)


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(torch.from_numpy(x), torch.from_numpy(y))


def partition_indices(
    partition_id: int, cfg: DataConfig, max_train: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, local test) row indices of one partition: the last ``digits.LOCAL_TEST_FRACTION``
    is its local test split (a partition of under 5 rows tests on its training rows); at most
    ``max_train`` training rows and a quarter as many test rows are kept when it is set."""
    idx = parts(cfg).indices(partition_id)
    cut = len(idx) - int(digits.LOCAL_TEST_FRACTION * len(idx)) if len(idx) >= 5 else len(idx)
    train, test = idx[:cut], idx[cut:] if cut < len(idx) else idx
    if max_train is not None:
        train, test = train[:max_train], test[: max(1, max_train // 4)]
    return train, test


def client_data(
    style: Rendering, partition_id: int, cfg: DataConfig, max_train: int | None = None
) -> tuple[Split, Split]:
    """(train, local test) images of one partition."""
    x, y, _, _ = pool(style, cfg.seed)
    train, test = partition_indices(partition_id, cfg, max_train)
    return _split(x[train], y[train]), _split(x[test], y[test])


def server_test_data(style: Rendering, cfg: DataConfig, limit: int | None = None) -> Split:
    """The rendered server hold-out (its first ``limit`` images when set)."""
    _, _, xt, yt = pool(style, cfg.seed)
    return _split(xt[:limit], yt[:limit])


def pooled_train_data(style: Rendering, cfg: DataConfig, max_train: int | None = None) -> Split:
    """The centralized baseline's data: the whole rendered pool, or, when partitions are capped
    at ``max_train`` rows, the union of every partition's training rows."""
    x, y, _, _ = pool(style, cfg.seed)
    if max_train is None:
        return _split(x, y)
    rows = np.concatenate(
        [partition_indices(p, cfg, max_train)[0] for p in range(cfg.num_partitions)]
    )
    return _split(x[rows], y[rows])
