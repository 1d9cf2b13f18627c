"""Training curves and the confusion matrix rendered offline to PNG and SVG (matplotlib, Agg)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metafgnet.io import atomic_path  # noqa: E402

MAX_GROUPS_SHOWN = 20


def read_tsv(path: Path) -> list[dict[str, float]]:
    with Path(path).open() as fh:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(fh, delimiter="\t")]


def _num(value: str):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def save_figure(fig, *paths: Path) -> list[Path]:
    """The figure to each path (format from its suffix), written atomically; closes it.

    The bytes depend on the figure alone: matplotlib would stamp an SVG with the time it was
    written (``dc:date``) and name its elements with random ids, so the figures of a cached
    output would hash differently on every run."""
    for path in paths:
        fmt = path.suffix.lstrip(".")
        with atomic_path(path) as tmp, plt.rc_context({"svg.hashsalt": "metafgnet"}):
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight",
                        metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    return list(paths)


def save_png_svg(fig, out_stem: Path) -> list[Path]:
    """The figure as ``<out_stem>.png`` and ``<out_stem>.svg`` (:func:`save_figure`)."""
    return save_figure(fig, out_stem.with_suffix(".png"), out_stem.with_suffix(".svg"))


def plot_score_distribution(groups: dict[str, np.ndarray], title: str,
                            out_stem: Path) -> list[Path]:
    """Selection scores per group (auxiliary family, or class): one box per group, sorted by
    median, with every image as a dot; with many groups only both ends are drawn."""
    names = sorted(groups, key=lambda n: float(np.median(groups[n])) if len(groups[n]) else 0.0)
    if len(names) > 2 * MAX_GROUPS_SHOWN:  # e.g. ImageNet's 1,000 classes: both ends only
        names = names[:MAX_GROUPS_SHOWN] + names[-MAX_GROUPS_SHOWN:]
        title += f" ({MAX_GROUPS_SHOWN} lowest and highest medians of {len(groups)})"
    fig, ax = plt.subplots(figsize=(max(4.5, 0.32 * len(names) + 2), 3.4))
    data = [np.asarray(groups[n], dtype=float) for n in names]
    ax.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)  # jitter only
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(values)), values, s=3, alpha=0.35)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=60 if len(names) > 8 else 0,
                  ha="right" if len(names) > 8 else "center", fontsize=7)
    ax.set_ylabel("selection score")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return save_png_svg(fig, out_stem)


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
    return save_png_svg(fig, out_stem)


def plot_confusion(confusion: np.ndarray, title: str, out_stem: Path) -> list[Path]:
    """Row-normalised confusion matrix (rows: true class)."""
    rows = confusion.sum(axis=1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(confusion / rows, cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return save_png_svg(fig, out_stem)
