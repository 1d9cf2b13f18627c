"""ImageDataset and the paper's transforms (torchvision.transforms.v2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from metafgnet.data import (
    IMAGENET_MEAN,
    DataError,
    ImageDataset,
    eval_transform,
    train_transform,
)
from metafgnet.params import DataParams


@pytest.fixture
def records(tmp_path, image):
    """One image per PIL mode the loader must convert (16-bit grey included), 12 x 12 or 10 x 12."""
    for mode in ("RGB", "L", "RGBA", "CMYK", "P"):
        suffix = ".jpg" if mode in ("L", "CMYK") else ".png"
        image(tmp_path / f"{mode}{suffix}", mode=mode, size=12)
    Image.fromarray(np.full((12, 10), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    names = ["RGB.png", "L.jpg", "RGBA.png", "CMYK.jpg", "P.png", "deep.png"]
    return [(name, k) for k, name in enumerate(names)]


def test_dataset_returns_rgb_float_tensors_and_int_labels(tmp_path, records):
    dataset = ImageDataset(records, tmp_path)
    assert len(dataset) == 6
    for i in range(len(dataset)):
        x, y = dataset[i]
        assert type(x) is torch.Tensor and x.dtype == torch.float32
        assert x.shape[0] == 3 and x.min() >= 0.0 and x.max() <= 1.0
        assert y == i
    deep, _ = dataset[5]
    assert torch.allclose(deep, torch.full_like(deep, round(40000 / 65535 * 255) / 255))


def test_transforms_shapes_and_normalisation(tmp_path, records):
    data = DataParams(image_size=8, resize=10)
    for transform in (
        train_transform(data),
        train_transform(data, "random_crop"),
        eval_transform(data),
    ):
        x, _ = ImageDataset(records, tmp_path, transform)[0]
        assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    names = [type(t).__name__ for t in train_transform(data, "random_crop").transforms]
    assert names[1:4] == ["Resize", "RandomCrop", "RandomHorizontalFlip"]
    names = [type(t).__name__ for t in train_transform(data).transforms]
    assert names[1:3] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    norm = eval_transform(data).transforms[-1]
    assert isinstance(norm, v2.Normalize) and tuple(norm.mean) == IMAGENET_MEAN


def test_eval_transform_is_deterministic_and_batches(tmp_path, records):
    dataset = ImageDataset(records, tmp_path, eval_transform(DataParams(image_size=8, resize=8)))
    x, y = next(iter(DataLoader(dataset, batch_size=6)))
    assert x.shape == (6, 3, 8, 8) and y.tolist() == list(range(6))
    assert torch.equal(dataset[2][0], dataset[2][0])


def test_unknown_style_and_unreadable_image(tmp_path, records):
    with pytest.raises(ValueError, match="unknown train transform style 'centre'"):
        train_transform(DataParams(), "centre")
    (tmp_path / "RGB.png").write_bytes(b"garbage")
    with pytest.raises(
        DataError, match=r"cannot read image .*RGB.png \(record 0\).*prepare_manifests"
    ):
        ImageDataset(records, tmp_path)[0]
