"""Training stages: source pretraining, meta-training, the joint baseline, fine-tuning (SPEC.md)."""

from __future__ import annotations

import csv
from pathlib import Path

from metafgnet.checkpoints import load_model, save_model
from metafgnet.data import Record
from metafgnet.evaluation import evaluate
from metafgnet.io import write_json, write_tsv
from metafgnet.models import build_model
from metafgnet.params import to_dict
from metafgnet.stages.context import StageContext
from metafgnet.training import finetune, joint_train, meta_train, pretrain


def _write_outputs(ctx: StageContext, out: Path, model, arch: dict, curves: list[dict],
                   metrics: dict) -> None:
    """The declared outputs of a training stage: model.pt, curves.tsv, metrics.json."""
    save_model(out / "model.pt", model, arch, ctx.params.declared(), ctx.name, metrics=metrics)
    write_tsv(out / "curves.tsv", curves)
    write_json(out / "metrics.json", metrics)
    ctx.run.log_artifact(out / "metrics.json")
    ctx.run.log_artifact(out / "curves.tsv")
    if ctx.tracking.log_models:
        sample = ctx.target("val", None)[0][0].unsqueeze(0)  # (1, C, H, W)
        head = model.source_net() if ctx.name == "pretrain" else model.target_net()
        ctx.run.log_model(head, name=ctx.name.replace("@", "-"), input_example=sample)


def run_pretrain(ctx: StageContext, out: Path) -> dict:
    """SPEC stage 1: backbone + new source head trained on the auxiliary set."""
    p = ctx.params
    model = build_model(p.model, len(ctx.data.target_classes), len(ctx.data.auxiliary_classes))
    model = model.to(ctx.device)
    curves = pretrain(model, ctx.auxiliary("random_resized_crop"), p.pretrain, device=ctx.device,
                      seed=p.seed, on_epoch=ctx.log_step, loader_kwargs=ctx.loader_kwargs)
    metrics = {k: v for k, v in curves[-1].items() if k != "epoch"}
    _write_outputs(ctx, out, model, to_dict(p.model), curves, metrics)
    return metrics


def read_selection(path: Path) -> list[Record]:
    """The auxiliary records kept by the ``select`` stage (original class indices)."""
    with path.open() as fh:
        return [Record(row["path"], int(row["label"])) for row in csv.DictReader(fh)]


def run_meta_train(ctx: StageContext, init: Path, out: Path, selection: Path | None = None) -> dict:
    """SPEC stages 2 and 4: MetaFGNet on all (or the selected) auxiliary data, fresh target head.

    On a selected subset the iteration count and the milestones are scaled by the kept fraction
    (SPEC stage 4: "iteration count scaled to the subset size").
    """
    p = ctx.params
    model, init_payload = load_model(init / "model.pt", ctx.device)
    model.reset_target_head(len(ctx.data.target_classes))
    model = model.to(ctx.device)
    records = ctx.data.auxiliary if selection is None else read_selection(selection)
    fraction = len(records) / max(1, len(ctx.data.auxiliary))
    iterations = max(1, round(p.meta.iterations * fraction))
    milestones = [max(1, round(m * fraction)) for m in p.meta.milestones]
    curves = meta_train(model, ctx.target("train", "random_resized_crop"),
                        ctx.auxiliary("random_resized_crop", records), p.meta,
                        device=ctx.device, seed=p.seed, iterations=iterations,
                        milestones=milestones, on_step=ctx.log_step,
                        loader_kwargs=ctx.loader_kwargs)
    val = evaluate(model, ctx.target("val", None), device=ctx.device, batch_size=256)
    metrics = {"val_top1": val["top1"], "iterations": iterations, "aux_images": len(records),
               **{f"final_{k}": v for k, v in curves[-1].items() if k.endswith("loss")}}
    _write_outputs(ctx, out, model, init_payload["model"], curves, metrics)
    return metrics


def run_joint(ctx: StageContext, init: Path, out: Path) -> dict:
    """Multi-task baseline: target + auxiliary cross-entropy from the pretrained model, no meta."""
    p = ctx.params
    model, init_payload = load_model(init / "model.pt", ctx.device)
    model.reset_target_head(len(ctx.data.target_classes))
    model = model.to(ctx.device)
    fit = joint_train(model, ctx.target("train", "random_resized_crop"),
                      ctx.auxiliary("random_resized_crop"), p.joint, device=ctx.device,
                      seed=p.seed, val_ds=ctx.target("val", None), on_epoch=ctx.log_step,
                      loader_kwargs=ctx.loader_kwargs)
    model.load_state_dict(fit.best_state)
    metrics = {"best_epoch": fit.best_epoch, "val_top1": fit.best_val_top1}
    _write_outputs(ctx, out, model, init_payload["model"], fit.curves, metrics)
    return metrics


def run_finetune(ctx: StageContext, init: Path, out: Path) -> dict:
    """SPEC stage 5 for one arm: fresh target head, best epoch chosen on validation."""
    p = ctx.params
    model, init_payload = load_model(init / "model.pt", ctx.device)
    model = model.to(ctx.device)
    fit = finetune(model, ctx.target("train", "random_crop"), ctx.target("val", None), p.finetune,
                   device=ctx.device, seed=p.seed, on_epoch=ctx.log_step,
                   loader_kwargs=ctx.loader_kwargs)
    model.load_state_dict(fit.best_state)
    metrics = {"best_epoch": fit.best_epoch, "val_top1": fit.best_val_top1}
    _write_outputs(ctx, out, model, init_payload["model"], fit.curves, metrics)
    return metrics
