"""Stage 5 (docs/method.md, "The stages"): fine-tuning one arm on the target set."""

from __future__ import annotations

from pathlib import Path

from metafgnet.stages.context import StageContext
from metafgnet.stages.training_io import load_init, write_outputs
from metafgnet.training import finetune


def run_finetune(ctx: StageContext, init: Path, out: Path) -> dict:
    """docs/method.md, stage 5 for one arm: fresh target head, best epoch chosen on validation."""
    p = ctx.params
    model, arch = load_init(ctx, init)
    ctx.live_curves(out / "curves.tsv")
    fit = finetune(model, ctx.target("train", "random_crop"), ctx.target("val", None), p.finetune,
                   ctx.loop(init / "model.pt"), on_epoch=ctx.log_step)
    metrics = {"best_epoch": fit.best_epoch, "val_top1": fit.best_val_top1}
    write_outputs(ctx, out, model, arch, fit.curves, metrics, inputs=(init / "model.pt",))
    return metrics
