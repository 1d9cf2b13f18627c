"""Image grids for eyeballing selection: the top- and bottom-scored auxiliary images."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor, resize
from torchvision.utils import make_grid

from metafgnet.io import atomic_path


def _load(path: Path, size: int) -> torch.Tensor:
    with Image.open(path) as img:
        return resize(pil_to_tensor(img.convert("RGB")), [size, size])  # (3, size, size) uint8


def save_image_grid(out: Path, top: list[Path], bottom: list[Path], size: int = 48) -> None:
    """One PNG: the ``top`` images in the upper rows, a blank row, then the ``bottom`` ones."""
    nrow = 8
    tiles = [_load(p, size) for p in top]
    blank = torch.full((3, size, size), 255, dtype=torch.uint8)
    tiles += [blank] * (-len(tiles) % nrow + nrow)  # pad the top block, then one blank row
    tiles += [_load(p, size) for p in bottom]
    grid = make_grid(torch.stack(tiles), nrow=nrow, padding=2, pad_value=255)  # (3, H, W)
    with atomic_path(out) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
