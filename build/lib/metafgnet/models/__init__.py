"""Backbones and the two-headed MetaFGNet model."""

from metafgnet.models.backbones import BACKBONES, SmallResNet, build_backbone
from metafgnet.models.metafgnet import HeadNet, MetaFGNet, build_model
from metafgnet.models.pretrained import PretrainedWeightsUnavailable, cache_path

__all__ = [
    "BACKBONES",
    "HeadNet",
    "MetaFGNet",
    "PretrainedWeightsUnavailable",
    "SmallResNet",
    "build_backbone",
    "build_model",
    "cache_path",
]
