"""Training stages: source pretraining, meta-training, the joint baseline, fine-tuning
(docs/method.md, "The stages").

Each stage loads its init model, trains with the loops of :mod:`metafgnet.training` (data
parallel over ``ctx.dist``, checkpointing into ``ctx.checkpoint_dir``), and on rank 0 writes its
declared outputs: ``model.pt``, ``curves.tsv``, ``metrics.json``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from metafgnet.data import Record
from metafgnet.distributed import sharded_evaluate
from metafgnet.io import write_json, write_tsv
from metafgnet.models import build_model, cache_path
from metafgnet.models.files import load_model, save_model
from metafgnet.params import to_dict
from metafgnet.stages.context import StageContext
from metafgnet.training import (
    finetune,
    joint_train,
    meta_train,
    prepare_model,
    pretrain,
    remove_checkpoints,
    subset_schedule,
)
from metafgnet.training.cost import PeakMemory, loop_cost
from metafgnet.training.monitor import without_timing


def _write_outputs(ctx: StageContext, out: Path, model, arch: dict, curves: list[dict],
                   metrics: dict, metrics_path: Path | None = None,
                   inputs: tuple[Path, ...] = ()) -> None:
    """Rank 0 writes the declared outputs; the stage's checkpoints are then dropped.

    ``inputs``: the files the stage read (init model, selection, weights), digested into the
    model file's provenance with the params and the data digest.

    ``metrics_path``: where the metrics go (default ``out/metrics.json``, cached with the
    model); the meta-training stages write theirs, with the loop's ``cost``, to small
    git-tracked, uncached files that ``dvc exp show`` compares. Timings never enter a cached
    output (model file, curves, cached metrics), so those hash the same on every run.
    """
    if ctx.dist.is_main:
        results = without_timing({k: v for k, v in metrics.items() if k != "cost"})
        cached = metrics_path is None
        metrics_path = metrics_path or out / "metrics.json"
        save_model(out / "model.pt", model, arch, ctx.params.declared(), ctx.name,
                   inputs=ctx.input_digests(*inputs), metrics=results)
        write_tsv(out / "curves.tsv", [without_timing(row) for row in curves])
        write_json(metrics_path, results if cached else metrics)
        ctx.run.log_artifact(metrics_path)
        ctx.run.log_artifact(out / "curves.tsv")
        if ctx.tracking.log_models:
            sample = ctx.target("val", None)[0][0].unsqueeze(0)  # (1, C, H, W)
            head = model.source_net() if ctx.name == "pretrain" else model.target_net()
            ctx.run.log_model(head.cpu(), name=ctx.name.replace("@", "-"), input_example=sample,
                              metrics=results)
        remove_checkpoints(ctx.checkpoint_dir)
    ctx.dist.barrier()


def _load(ctx: StageContext, init: Path):
    """The init model on the stage's device, with its architecture params."""
    model, payload = load_model(init / "model.pt")
    return prepare_model(model, ctx.params.runtime, ctx.device), payload["model"]


def run_pretrain(ctx: StageContext, out: Path) -> dict:
    """docs/method.md, stage 1: backbone + new source head trained on the auxiliary set."""
    p = ctx.params
    model = build_model(p.model, len(ctx.data.target_classes), len(ctx.data.auxiliary_classes))
    model = prepare_model(model, p.runtime, ctx.device)
    inputs = () if p.model.pretrained == "none" else (cache_path(p.model.backbone),)
    ctx.live_curves(out / "curves.tsv")
    curves = pretrain(model, ctx.auxiliary("random_resized_crop"), p.pretrain,
                      ctx.loop(*inputs, seed=p.pretrain.seed), on_epoch=ctx.log_step)
    metrics = {k: v for k, v in curves[-1].items() if k != "epoch"}
    _write_outputs(ctx, out, model, to_dict(p.model), curves, metrics, inputs=inputs)
    return metrics


def read_selection(path: Path) -> list[Record]:
    """The auxiliary records kept by the ``select`` stage (original class indices)."""
    with path.open() as fh:
        return [Record(row["path"], int(row["label"])) for row in csv.DictReader(fh)]


def run_meta_train(ctx: StageContext, init: Path, out: Path, metrics_path: Path,
                   selection: Path | None = None, random_like: bool = False) -> dict:
    """Stages 2 and 4: MetaFGNet on all (or the selected) auxiliary data, fresh target head.

    On a selected subset the iteration count and the milestones are scaled by the kept fraction
    (stage 4: "iteration count scaled to the subset size"). ``random_like``: the control for
    selection (:mod:`metafgnet.selection.subsets`): instead of the ``selection`` itself, a random
    subset of its size (seeded by ``select.random_seed``), with the same scaled schedule, written
    to ``out/subset.csv``. The metrics carry the loop's cost (:mod:`metafgnet.training.cost`):
    what ``meta.order`` costs is read beside what it buys.
    """
    p = ctx.params
    model, arch = _load(ctx, init)
    model.reset_target_head(len(ctx.data.target_classes))
    records = ctx.data.auxiliary if selection is None else read_selection(selection)
    if random_like:
        # imported here: only the control stage depends on the selection code
        from metafgnet.selection.subsets import random_subset, write_subset

        keep = random_subset(len(ctx.data.auxiliary), len(records), p.select.random_seed)
        records = [r for r, k in zip(ctx.data.auxiliary, keep.tolist(), strict=True) if k]
        if ctx.dist.is_main:
            write_subset(out / "subset.csv", ctx.data.auxiliary, keep)
    iterations, milestones = subset_schedule(p.meta, len(records), len(ctx.data.auxiliary))
    inputs = [init / "model.pt"] + ([] if selection is None else [selection])
    ctx.live_curves(out / "curves.tsv")
    with PeakMemory(ctx.device) as memory:
        curves = meta_train(model, ctx.target("train", "random_resized_crop"),
                            ctx.auxiliary("random_resized_crop", records), p.meta,
                            ctx.loop(*inputs), iterations=iterations, milestones=milestones,
                            on_step=ctx.log_step)
    val = sharded_evaluate(model, ctx.target("val", None), dist=ctx.dist, device=ctx.device,
                           batch_size=256, loader_kwargs=ctx.loader_kwargs)
    metrics = {"val_top1": val["top1"], "iterations": iterations, "aux_images": len(records),
               **{f"final_{k}": v for k, v in curves[-1].items() if k.endswith("loss")},
               "cost": loop_cost(curves, memory)}
    ctx.run.log_metrics({f"cost/{k}": v for k, v in metrics["cost"].items()
                         if isinstance(v, float)})
    _write_outputs(ctx, out, model, arch, curves, metrics, metrics_path, inputs=tuple(inputs))
    return metrics


def run_joint(ctx: StageContext, init: Path, out: Path) -> dict:
    """Multi-task baseline: target + auxiliary cross-entropy from the pretrained model, no meta."""
    p = ctx.params
    model, arch = _load(ctx, init)
    ctx.live_curves(out / "curves.tsv")
    fit = joint_train(model, ctx.target("train", "random_resized_crop"),
                      ctx.auxiliary("random_resized_crop"), p.joint, ctx.loop(init / "model.pt"),
                      val_ds=ctx.target("val", None), on_epoch=ctx.log_step)
    metrics = {"best_epoch": fit.best_epoch, "val_top1": fit.best_val_top1}
    _write_outputs(ctx, out, model, arch, fit.curves, metrics, inputs=(init / "model.pt",))
    return metrics


def run_finetune(ctx: StageContext, init: Path, out: Path) -> dict:
    """docs/method.md, stage 5 for one arm: fresh target head, best epoch chosen on validation."""
    p = ctx.params
    model, arch = _load(ctx, init)
    ctx.live_curves(out / "curves.tsv")
    fit = finetune(model, ctx.target("train", "random_crop"), ctx.target("val", None), p.finetune,
                   ctx.loop(init / "model.pt"), on_epoch=ctx.log_step)
    metrics = {"best_epoch": fit.best_epoch, "val_top1": fit.best_val_top1}
    _write_outputs(ctx, out, model, arch, fit.curves, metrics, inputs=(init / "model.pt",))
    return metrics
