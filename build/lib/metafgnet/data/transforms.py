"""Image transforms of the paper, sized by ``DataParams`` (torchvision.transforms.v2).

- ``train_transform(data, "random_resized_crop")``: RandomResizedCrop(image_size) + flip, used
  for source pretraining and meta-training (docs/method.md, stages 1, 2, 4).
- ``train_transform(data, "random_crop")``: Resize(resize) + RandomCrop(image_size) + flip, used
  for fine-tuning (stage 5).
- ``eval_transform(data)``: Resize(resize) + CenterCrop(image_size).

All end in a float tensor (C, H, W) normalised with the ImageNet mean/std. Randomness comes from
torch's global generator (seeded per DataLoader worker by torch).
"""

from __future__ import annotations

from typing import Literal

import torch
from torchvision.transforms import v2

from metafgnet.params import DataParams

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TrainStyle = Literal["random_resized_crop", "random_crop"]


def _to_normalised_tensor() -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(data: DataParams, style: TrainStyle = "random_resized_crop") -> v2.Compose:
    """Training augmentation: see the module docstring for the two ``style`` s."""
    if style == "random_resized_crop":
        geometry = [v2.RandomResizedCrop(data.image_size, antialias=True)]
    elif style == "random_crop":
        geometry = [v2.Resize(data.resize, antialias=True), v2.RandomCrop(data.image_size)]
    else:
        raise ValueError(
            f"unknown train transform style {style!r}; expected 'random_resized_crop' "
            "(pretraining/meta-training) or 'random_crop' (fine-tuning)"
        )
    return v2.Compose(
        [v2.ToImage(), *geometry, v2.RandomHorizontalFlip(), *_to_normalised_tensor()]
    )


def eval_transform(data: DataParams) -> v2.Compose:
    """Evaluation: Resize(resize) of the shorter side, then a centre crop of image_size."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(data.resize, antialias=True),
            v2.CenterCrop(data.image_size),
            *_to_normalised_tensor(),
        ]
    )
