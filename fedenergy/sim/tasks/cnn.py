"""A small CNN with BatchNorm on 28x28 grey images (the FEMNIST regime): the embedded digits
rendered at 28x28 with seeded shifts and noise (:mod:`.images`), split by flwr-datasets.

Four 3x3 convolutions (32, 64, 128 and 256 channels), each followed by BatchNorm and ReLU, the
first three by a 2x2 max pool too (28 -> 14 -> 7 -> 3), then a global average pool and a linear
classifier (256 -> 10): 390,890 parameters, a 1.57 MB message (float32 weights and BatchNorm
statistics), 20.2 MFLOP per sample forward (docs/workloads.md). BatchNorm throughout lets plain
SGD train it at the default learning rate.
"""

from __future__ import annotations

import torch
from torch import nn

from fedenergy.sim.tasks import images
from fedenergy.sim.tasks.base import DataConfig, Split

NAME = "cnn"
STYLE = images.Rendering(size=28, glyph=20, channels=1)
CHANNELS = (32, 64, 128, 256)
CLASSES = 10


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]


def make_model(classes: int = CLASSES) -> nn.Module:
    """conv(1->32)-conv(32->64)-conv(64->128), each with BatchNorm, ReLU and a 2x2 pool,
    conv(128->256) with BatchNorm and ReLU, global average pool, linear 256 -> ``classes``
    (10; FEMNIST's 62 for the real data set, docs/workloads.md)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c_in = STYLE.channels
    for c in CHANNELS[:-1]:
        layers += _block(c_in, c)
        c_in = c
    layers += _block(c_in, CHANNELS[-1])[:-1]  # no pool after the last convolution
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS[-1], classes)]
    return nn.Sequential(*layers)


def client_data(partition_id: int, cfg: DataConfig) -> tuple[Split, Split]:
    """(train, local test) images of one partition."""
    return images.client_data(STYLE, partition_id, cfg)


def server_test_data(cfg: DataConfig) -> Split:
    """The rendered server hold-out (359 images)."""
    return images.server_test_data(STYLE, cfg)


def pooled_train_data(cfg: DataConfig) -> Split:
    """The whole rendered pool (the centralized baseline's data)."""
    return images.pooled_train_data(STYLE, cfg)
