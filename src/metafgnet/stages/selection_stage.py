"""SPEC stage 3: score every auxiliary image with the meta-trained model and keep the best."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from metafgnet.checkpoints import load_model
from metafgnet.distributed import sharded_score_auxiliary
from metafgnet.io import atomic_path, write_json, write_tsv
from metafgnet.reporting.grids import save_image_grid
from metafgnet.selection import select, selected_class_counts
from metafgnet.stages.context import StageContext


def related_truth(auxiliary_root: Path) -> dict[str, bool] | None:
    """Synthetic benchmark only: class name -> related to the target family (never trained on)."""
    path = Path(auxiliary_root).parent / "auxiliary_truth.csv"
    if not path.is_file():
        return None
    with path.open() as fh:
        return {row["class_name"]: row["related"] == "1" for row in csv.DictReader(fh)}


def run_select(ctx: StageContext, init: Path, out: Path, grid_size: int = 32) -> dict:
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

    with atomic_path(out / "selected.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows((r.path, r.label) for r, k in zip(records, keep.tolist(), strict=True) if k)
    write_tsv(out / "scores.tsv", [
        {"path": r.path, "label": r.label, "score": float(s), "selected": int(k)}
        for r, s, k in zip(records, scores.tolist(), keep.tolist(), strict=True)])

    metrics = {"selected_fraction": float(keep.float().mean()), "selected_images": int(keep.sum()),
               "auxiliary_images": len(records),
               "classes_emptied": int((counts == 0).sum())}
    truth = related_truth(ctx.data.auxiliary_root)
    if truth is not None:
        related = torch.tensor([truth[ctx.data.auxiliary_classes[r.label]] for r in records])
        metrics["related_base_rate"] = float(related.float().mean())
        metrics["selection_precision"] = float(related[keep].float().mean()) if keep.any() else 0.0
    write_json(out / "metrics.json", metrics)

    order = torch.argsort(scores, descending=True, stable=True)
    paths = [Path(ctx.data.auxiliary_root) / records[i].path for i in order.tolist()]
    save_image_grid(out / "top_bottom.png", paths[:grid_size], paths[-grid_size:])
    for name in ("metrics.json", "top_bottom.png"):
        ctx.run.log_artifact(out / name)
    ctx.run.log_metrics({k: float(v) for k, v in metrics.items()}, step=0)
    return metrics
