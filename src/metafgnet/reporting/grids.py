"""Image grids for eyeballing selection: the top- and bottom-scored auxiliary images, labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from metafgnet.reporting.plots import plt, save_figure


def _load(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((size, size)))  # (size, size, 3) uint8


def save_image_grid(out: Path, top: list[tuple[Path, str]], bottom: list[tuple[Path, str]],
                    size: int = 48, ncol: int = 8) -> None:
    """One PNG in two labelled blocks: the ``top`` images (highest score first), then the
    ``bottom`` ones (lowest score last); each tile is captioned with its label (the image's
    family on the embedded benchmark, its class elsewhere)."""
    blocks = [(f"top {len(top)} by selection score (highest first)", top),
              (f"bottom {len(bottom)} by selection score (lowest last)", bottom)]
    rows = [max(1, -(-len(items) // ncol)) for _, items in blocks]
    fig = plt.figure(figsize=(1.25 * ncol, 1.45 * sum(rows) + 0.8))
    subs = fig.subfigures(2, 1, height_ratios=rows)
    assert isinstance(subs, np.ndarray)  # two rows: an array of subfigures
    for sub, (title, items), nrow in zip(subs, blocks, rows, strict=True):
        sub.suptitle(title, fontsize=10, fontweight="bold")
        axes = sub.subplots(nrow, ncol, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if i < len(items):
                path, label = items[i]
                ax.imshow(_load(Path(path), size))
                ax.set_title(label, fontsize=7, pad=2)
    save_figure(fig, out)
