"""Training FLOPs of the named models in the validation suite's training cases, counted with
fedenergy's own counter (``fedenergy.physics.flops``) on torch re-creations of the architectures.

The cases store the counted figure as a number (so ``validate.py`` needs no torch at run time);
``tests/test_validate.py`` recounts it here and checks it matches.

ResNet-18 (He et al., CVPR 2016) is re-created layer for layer as torchvision and timm build it
under the name ``resnet18``: a 7x7/2 stem convolution with 64 channels, 3x3/2 max pooling, four
stages of two basic blocks (64, 128, 256, 512 channels; the first block of stages 2-4 strides by
2 and projects the shortcut with a 1x1 convolution and batch norm), global average pooling and a
512 -> 1000 linear classifier: 11,689,512 parameters.

MobileNetV2 (Sandler et al., CVPR 2018), width 1.0, is re-created as torchvision's
``mobilenet_v2`` and timm's ``mobilenetv2_100`` build it: a 3x3/2 stem convolution with 32
channels, seventeen inverted-residual blocks (expansion t, channels c, repeats n, first stride s:
1-16-1-1, 6-24-2-2, 6-32-3-2, 6-64-4-2, 6-96-3-1, 6-160-3-2, 6-320-1-1; a block expands with a 1x1
convolution unless t = 1, filters with a 3x3 depthwise convolution, projects with a 1x1
convolution, and adds its input when stride 1 keeps the channels), a 1x1 convolution to 1280
channels, global average pooling and a 1280 -> 1000 classifier: 3,504,872 parameters.

The benchmark the cases come from builds both with ``timm.create_model(name, num_classes=1000)``.

The residual U-Net of the whole-federation case (Tapp et al.'s retinal segmentation,
github.com/Pediatric-Accelerated-Intelligence-Lab/carbon_footprint, ``RetSeg/modules/learner.py``
and ``RetSeg/model/unet.py``) is MONAI's ``UNet(spatial_dims=2, in_channels=3, out_channels=1,
channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, act="RELU")`` at full
depth (``compute_capacity`` 5, which ``train.py`` fixes for FedAvg), re-created here as MONAI
builds it: each level going down is a residual unit of two 3x3 convolutions (the first strided)
with a 3x3 strided convolution on the shortcut; the bottom unit (128 -> 256 channels) keeps the
resolution and projects its shortcut with a 1x1 convolution; each level going up concatenates
the skip connection, upsamples with a 3x3 transposed convolution (stride 2) and refines with a
one-convolution residual unit (identity shortcut; the top one ends on the bare convolution).
Instance norm and ReLU count 0. The frozen 1x1 bypass adapters of ``unet.py`` run only below
full depth and are left out.

Convention (fedenergy's counter, ``fedenergy.physics.flops``): 2 FLOPs per multiply-add of
convolutions and matrix products, in the forward; the backward costs the forward twice (input and
weight gradients) except the input gradient of the first layer, which training does not need;
plus 2 FLOPs per parameter for the SGD update. Normalisation, activations and pooling count 0.
So a training step costs 3 x forward - forward of the first layer + 2 x parameters, with the
forward counted by ``torch.utils.flop_counter.FlopCounterMode``. The backward is computed from
that rule rather than counted, because torch 2.13's counter charges the weight gradient of a
grouped (depthwise) convolution as if it were dense (about ``groups`` times too much: 8.4 GFLOP
instead of 0.17 for one 96-channel 3x3 depthwise layer at 56x56, batch 16), which would inflate
MobileNetV2's count about sevenfold; for ResNet-18, which has no grouped convolution, the rule
and the counted backward agree exactly (tests/test_validate.py checks both).

    PYTHONPATH=. python simulations/validation_flops.py   # prints the counts the cases store
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fedenergy.physics.flops import FlopCache, num_parameters  # noqa: E402


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


def resnet18(num_classes: int = 1000) -> nn.Module:
    """ResNet-18 with the layer shapes of torchvision's and timm's ``resnet18``."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion (unless t = 1), 3x3 depthwise, 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = []
        if t != 1:
            layers += [*_conv_bn(cin, hidden, 1, 1), nn.ReLU6()]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += _conv_bn(hidden, cout, 1, 1)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    """MobileNetV2 (width 1.0) with the layer shapes of torchvision's ``mobilenet_v2``."""
    layers: list[nn.Module] = [*_conv_bn(3, 32, 3, 2), nn.ReLU6()]
    cin = 32
    for t, c, n, s in (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ):
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [*_conv_bn(cin, 1280, 1, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers += [nn.Dropout(0.2), nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers)


def _conv_unit(cin: int, cout: int, stride: int, last: bool = False) -> nn.Module:
    """MONAI ``Convolution``: 3x3 convolution, then instance norm and ReLU (none if ``last``)."""
    conv = nn.Conv2d(cin, cout, 3, stride, 1)
    return conv if last else nn.Sequential(conv, nn.InstanceNorm2d(cout), nn.ReLU())


class ResidualUnit(nn.Module):
    """MONAI ``ResidualUnit``: ``subunits`` 3x3 convolution units (the first strided) plus a
    shortcut: identity when shape-preserving, else a convolution (3x3 strided, or 1x1)."""

    def __init__(
        self, cin: int, cout: int, stride: int, subunits: int, last_conv_only: bool = False
    ) -> None:
        super().__init__()
        units, c = [], cin
        for i in range(subunits):
            last = last_conv_only and i == subunits - 1
            units.append(_conv_unit(c, cout, stride if i == 0 else 1, last))
            c = cout
        self.conv = nn.Sequential(*units)
        self.residual: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            k = 3 if stride != 1 else 1
            self.residual = nn.Conv2d(cin, cout, k, stride, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.residual(x)


class _Level(nn.Module):
    """One U-Net level: down, the levels below (or the bottom unit), concatenate, up."""

    def __init__(self, down: nn.Module, sub: nn.Module, up: nn.Module) -> None:
        super().__init__()
        self.down, self.sub, self.up = down, sub, up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.down(x)
        return self.up(torch.cat([d, self.sub(d)], dim=1))


def _up(cin: int, cout: int, top: bool) -> nn.Module:
    """3x3 transposed convolution (stride 2) with norm and ReLU, then a one-unit residual unit."""
    tconv = nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1)
    conv = nn.Sequential(tconv, nn.InstanceNorm2d(cout), nn.ReLU())
    return nn.Sequential(conv, ResidualUnit(cout, cout, 1, 1, last_conv_only=top))


def residual_unet(channels: tuple[int, ...] = (16, 32, 64, 128, 256)) -> nn.Module:
    """The 2-D residual U-Net of MONAI's ``UNet(2, 3, 1, channels, strides=2s, num_res_units=2)``
    at full depth (see the module docstring)."""

    def level(cin: int, cout: int, chans: tuple[int, ...], top: bool) -> nn.Module:
        c = chans[0]
        down = ResidualUnit(cin, c, 2, 2)
        if len(chans) > 2:
            return _Level(down, level(c, c, chans[1:], False), _up(2 * c, cout, top))
        bottom = ResidualUnit(c, chans[1], 1, 2)
        return _Level(down, bottom, _up(c + chans[1], cout, top))

    return nn.Sequential(level(3, 1, channels, True))


def unet_train_step_flops(batch: int = 96, size: int = 256) -> int:
    """FLOPs of one training step of the residual U-Net on ``batch`` 3-channel ``size`` x
    ``size`` images: fedenergy's counted training step (forward, the backward autograd runs,
    2 FLOPs per parameter; no grouped convolution, so the counted backward is exact)."""
    return FlopCache().train_step(residual_unet(), torch.zeros(batch, 3, size, size))


def train_step_flops(model: nn.Sequential, batch: int, shape: tuple[int, ...]) -> int:
    """FLOPs of one SGD step of ``model`` on ``batch`` inputs of ``shape``, by the convention
    above: 3 x forward - forward of the first layer + 2 x parameters."""
    x = torch.zeros(batch, *shape)
    cache = FlopCache()
    forward = cache.forward(model, x)
    first = cache.forward(model[0], x)
    return 3 * forward - first + 2 * num_parameters(model)


def resnet18_train_step_flops(batch: int = 16) -> int:
    """FLOPs of one SGD training step of ResNet-18 (1000 classes) on ``batch`` 224x224 images."""
    return train_step_flops(resnet18(), batch, (3, 224, 224))


def mobilenet_v2_train_step_flops(batch: int = 16) -> int:
    """FLOPs of one SGD training step of MobileNetV2 (1000 classes) on ``batch`` 224x224 images."""
    return train_step_flops(mobilenet_v2(), batch, (3, 224, 224))


if __name__ == "__main__":
    x = torch.zeros(1, 3, 224, 224)
    for name, build, step in (
        ("resnet18", resnet18, resnet18_train_step_flops),
        ("mobilenet_v2", mobilenet_v2, mobilenet_v2_train_step_flops),
    ):
        m = build()
        print(
            f"{name}: parameters {num_parameters(m)}, forward FLOPs (1 image) "
            f"{FlopCache().forward(m, x)}, train step FLOPs (batch 16) {step(16)}"
        )
    u = residual_unet()
    print(
        f"residual_unet: parameters {num_parameters(u)}, forward FLOPs (1 image, 256x256) "
        f"{FlopCache().forward(u, torch.zeros(1, 3, 256, 256))}, train step FLOPs (batch 96) "
        f"{unet_train_step_flops(96)}"
    )
