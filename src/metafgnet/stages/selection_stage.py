"""Stage 3: score every auxiliary image with the meta-trained model and keep the best."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from metafgnet.distributed import sharded_score_auxiliary
from metafgnet.io import write_json, write_tsv
from metafgnet.models.files import load_model
from metafgnet.reporting.grids import save_image_grid
from metafgnet.reporting.plots import plot_score_distribution
from metafgnet.selection import select, selected_class_counts, selection_quality, write_subset
from metafgnet.stages.context import StageContext


def auxiliary_truth(auxiliary_root: Path) -> dict[str, tuple[str, bool]] | None:
    """Embedded benchmark only: class name -> (family, related to the target family); never
    trained on. None for real data."""
    path = Path(auxiliary_root).parent / "auxiliary_truth.csv"
    if not path.is_file():
        return None
    with path.open() as fh:
        return {row["class_name"]: (row["family"], row["related"] == "1")
                for row in csv.DictReader(fh)}


def run_select(ctx: StageContext, init: Path, out: Path, metrics_path: Path,
               grid_size: int = 32) -> dict:
    """Stage 3: score, keep, and judge the selection.

    Writes ``selected.csv``, ``scores.tsv``, the labelled top/bottom grid and the score
    distribution per auxiliary family (with ground truth) or per class (without) under ``out``,
    and the metrics (kept fraction; with ground truth also ROC AUC and precision at k,
    :mod:`metafgnet.selection.quality`) to ``metrics_path``.
    """
    p = ctx.params
    model, _ = load_model(init / "model.pt", ctx.device)
    records = ctx.data.auxiliary
    scores = sharded_score_auxiliary(model, ctx.auxiliary(None), dist=ctx.dist, device=ctx.device,
                                     batch_size=p.select.batch_size,
                                     loader_kwargs=ctx.loader_kwargs)  # (N,)
    if not ctx.dist.is_main:
        return {}
    keep = select(scores, p.select)  # (N,) bool
    labels = torch.tensor([r.label for r in records])
    counts = selected_class_counts(labels, keep, len(ctx.data.auxiliary_classes))

    write_subset(out / "selected.csv", records, keep)
    write_tsv(out / "scores.tsv", [
        {"path": r.path, "label": r.label, "score": float(s), "selected": int(k)}
        for r, s, k in zip(records, scores.tolist(), keep.tolist(), strict=True)])

    metrics = {"selected_fraction": float(keep.float().mean()), "selected_images": int(keep.sum()),
               "auxiliary_images": len(records),
               "classes_emptied": int((counts == 0).sum())}
    class_names = [ctx.data.auxiliary_classes[r.label] for r in records]
    truth = auxiliary_truth(ctx.data.auxiliary_root)
    if truth is not None:
        related = torch.tensor([truth[name][1] for name in class_names])
        metrics.update(selection_quality(scores, keep, related))
        groups = [f"{truth[name][0]}{'' if truth[name][1] else ' (unrelated)'}"
                  for name in class_names]
        by = "family"
    else:
        groups, by = class_names, "class"
    write_json(metrics_path, metrics)

    score_list = scores.tolist()
    per_group: dict[str, list[float]] = {}
    for group, score in zip(groups, score_list, strict=True):
        per_group.setdefault(group, []).append(score)
    plot_score_distribution({g: np.asarray(v) for g, v in per_group.items()},
                            f"selection scores per auxiliary {by}", out / "score_distribution")
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    tiles = [(Path(ctx.data.auxiliary_root) / records[i].path, groups[i]) for i in order]
    save_image_grid(out / "top_bottom.png", tiles[:grid_size], tiles[-grid_size:])
    for name in ("top_bottom.png", "score_distribution.png"):
        ctx.run.log_artifact(out / name)
    ctx.run.log_artifact(metrics_path)
    ctx.run.log_metrics({f"selection/{k}": float(v) for k, v in metrics.items()}, step=0)
    return metrics
