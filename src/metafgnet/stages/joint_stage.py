"""The multi-task baseline (docs/method.md, "The stages"): target + auxiliary cross-entropy from
the pretrained model, no meta-learning."""

from __future__ import annotations

from pathlib import Path

from metafgnet.stages.context import StageContext
from metafgnet.stages.training_io import load_init, write_outputs
from metafgnet.training import joint_train


def run_joint(ctx: StageContext, init: Path, out: Path) -> dict:
    """Multi-task baseline: target + auxiliary cross-entropy from the pretrained model, no meta."""
    p = ctx.params
    model, arch = load_init(ctx, init)
    ctx.live_curves(out / "curves.tsv")
    fit = joint_train(model, ctx.target("train", "random_resized_crop"),
                      ctx.auxiliary("random_resized_crop"), p.joint, ctx.loop(init / "model.pt"),
                      val_ds=ctx.target("val", None), on_epoch=ctx.log_step)
    metrics = {"best_epoch": fit.best_epoch, "val_top1": fit.best_val_top1}
    write_outputs(ctx, out, model, arch, fit.curves, metrics, inputs=(init / "model.pt",))
    return metrics
