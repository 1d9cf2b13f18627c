"""Training curves and the confusion matrix rendered offline to PNG and SVG (matplotlib, Agg)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metafgnet.io import atomic_path  # noqa: E402


def read_tsv(path: Path) -> list[dict[str, float]]:
    with Path(path).open() as fh:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(fh, delimiter="\t")]


def _num(value: str):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _save(fig, out_stem: Path) -> list[Path]:
    written = []
    for ext in ("png", "svg"):
        path = out_stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=110, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written


def plot_curves(series: dict[str, list[dict]], x: str, ys: list[str], title: str,
                out_stem: Path) -> list[Path]:
    """One panel per ``y`` column, one line per named series (e.g. per stage or arm)."""
    fig, axes = plt.subplots(1, len(ys), figsize=(4.2 * len(ys), 3.2), squeeze=False)
    for ax, y in zip(axes[0], ys, strict=True):
        for name, rows in series.items():
            pts = [(r[x], r[y]) for r in rows if isinstance(r.get(y), float)]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=name)
        ax.set_xlabel(x)
        ax.set_title(y)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, y=1.04)
    return _save(fig, out_stem)


def plot_confusion(confusion: np.ndarray, title: str, out_stem: Path) -> list[Path]:
    """Row-normalised confusion matrix (rows: true class)."""
    rows = confusion.sum(axis=1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(confusion / rows, cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return _save(fig, out_stem)
