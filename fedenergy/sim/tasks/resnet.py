"""A ResNet-18 on 32x32 colour images (the CIFAR-10 regime, with tens of megabytes per
message): the embedded digits rendered at 32x32 in random colours with seeded shifts and noise
(:mod:`.images`), split by flwr-datasets, at most ``MAX_TRAIN`` training images per node.

ResNet-18's layout (He et al., 2016: a stem, then four stages of two basic blocks, 64, 128, 256
and 512 channels, each stage after the first halving the side) with a 3x3 stride-2 stem
convolution (no max pool), so the stages run at 16, 8, 4 and 2 pixels: a quarter of the
multiply-adds of the CIFAR variant (stride-1 stem, stages at 32 to 4 pixels), the same weights,
and no 1x1 map for BatchNorm to fail on with a one-image batch. BatchNorm follows every
convolution. 11,173,962 parameters: a 44.7 MB message (float32 weights and BatchNorm
statistics), 277.7 MFLOP per sample forward (docs/workloads.md). Nodes keep ``MAX_TRAIN``
training images so that a few-node, few-round run fits a small CPU machine.
"""

from __future__ import annotations

import torch
from torch import nn

from fedenergy.sim.tasks import images
from fedenergy.sim.tasks.base import DataConfig, Split

NAME = "resnet"
STYLE = images.Rendering(size=32, glyph=24, channels=3)
WIDTHS = (64, 128, 256, 512)
BLOCKS = 2  # per stage
CLASSES = 10
MAX_TRAIN = 64  # training images per node (and a quarter as many local test images)
SERVER_TEST = 100  # server hold-out images evaluated each round


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm, added to the input (a 1x1 projection with
    BatchNorm when the width or the side changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem (3x3 stride-2 convolution, BatchNorm, ReLU, 2x2 max pool), four stages of basic
    blocks, global average pool, linear classifier."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(STYLE.channels, WIDTHS[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(WIDTHS[0]),
            nn.ReLU(),
        )
        blocks, c_in = [], WIDTHS[0]
        for i, width in enumerate(WIDTHS):
            for b in range(BLOCKS):
                blocks.append(BasicBlock(c_in, width, 2 if i > 0 and b == 0 else 1))
                c_in = width
        self.stages = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def make_model(classes: int = CLASSES) -> nn.Module:
    """The ResNet-18 described in the module docstring, ``classes`` outputs (seeded
    initialisation; each block's
    last BatchNorm starts at zero scale, so that every block starts as the identity and plain
    SGD at the default learning rate does not diverge)."""
    torch.manual_seed(0)
    model = ResNet(classes)
    for block in model.stages:
        nn.init.zeros_(block.bn2.weight)
    return model


def client_data(partition_id: int, cfg: DataConfig) -> tuple[Split, Split]:
    """(train, local test) images of one partition, at most ``MAX_TRAIN`` training images."""
    return images.client_data(STYLE, partition_id, cfg, MAX_TRAIN)


def server_test_data(cfg: DataConfig) -> Split:
    """The first ``SERVER_TEST`` images of the rendered server hold-out."""
    return images.server_test_data(STYLE, cfg, SERVER_TEST)


def pooled_train_data(cfg: DataConfig) -> Split:
    """Every node's training images together (the centralized baseline's data)."""
    return images.pooled_train_data(STYLE, cfg, MAX_TRAIN)
