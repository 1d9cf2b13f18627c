"""Backbone registry: every backbone maps images ``(B, C, H, W)`` to a pooled feature ``(B, D)``.

``small_resnet`` is a three-stage residual net with BatchNorm sized for CPU runs at 32 px.
``resnet18``, ``resnet34`` (the paper's) and ``resnet50`` are torchvision's networks up to and
including global average pooling, with ``fc`` removed; their submodule names match torchvision's,
so ImageNet state dicts load into them unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from metafgnet.models.pretrained import load_imagenet_state_dict
from metafgnet.params import ParamsError


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_ch, H, W)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))  # (B, out_ch, H/stride, W/stride)


class SmallResNet(nn.Module):
    """Stem + three residual stages (widths w, 2w, 4w; strides 1, 2, 2) + global average pool."""

    def __init__(self, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.layer1 = BasicBlock(width, width, stride=1)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 4 * width, stride=2)
        self.feature_dim = 4 * width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))  # (B, 4w, H/4, W/4)
        return x.mean(dim=(2, 3))  # (B, 4w)


class TorchvisionBackbone(nn.Sequential):
    """A torchvision ResNet without ``fc``: conv1 ... layer4, avgpool, flatten -> ``(B, D)``."""

    def __init__(self, resnet: nn.Module) -> None:
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                 "avgpool"]
        layers = OrderedDict((n, getattr(resnet, n)) for n in names)
        layers["flatten"] = nn.Flatten(1)  # (B, D, 1, 1) -> (B, D)
        super().__init__(layers)
        fc = resnet.fc
        assert isinstance(fc, nn.Linear)  # every torchvision ResNet ends in one linear layer
        self.feature_dim = fc.in_features


def _small_resnet(width: int, pretrained: bool) -> nn.Module:
    if pretrained:
        raise ParamsError(
            "model.pretrained: imagenet is only available for the torchvision backbones "
            "(resnet18, resnet34, resnet50); small_resnet has no ImageNet weights: "
            "set model.pretrained: none"
        )
    return SmallResNet(width)


def _torchvision(arch: str) -> Callable[[int, bool], nn.Module]:
    def build(width: int, pretrained: bool) -> nn.Module:
        import torchvision

        del width  # torchvision nets have fixed widths
        resnet = getattr(torchvision.models, arch)(weights=None)
        if pretrained:
            # Loads from the torch hub cache, or fails at once when offline (never hangs).
            resnet.load_state_dict(load_imagenet_state_dict(arch))
        return TorchvisionBackbone(resnet)

    return build


BACKBONES: dict[str, Callable[[int, bool], nn.Module]] = {
    "small_resnet": _small_resnet,
    "resnet18": _torchvision("resnet18"),
    "resnet34": _torchvision("resnet34"),
    "resnet50": _torchvision("resnet50"),
}


def build_backbone(name: str, width: int = 32, pretrained: bool = False) -> nn.Module:
    """A backbone by registry name; the module has a ``feature_dim`` attribute (D)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](width, pretrained)
