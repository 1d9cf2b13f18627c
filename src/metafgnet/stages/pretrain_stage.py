"""Stage 1 (docs/method.md, "The stages"): source pretraining on the auxiliary set."""

from __future__ import annotations

from pathlib import Path

from metafgnet.models import build_model, cache_path
from metafgnet.params import to_dict
from metafgnet.stages.context import StageContext
from metafgnet.stages.training_io import write_outputs
from metafgnet.training import prepare_model, pretrain


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
    write_outputs(ctx, out, model, to_dict(p.model), curves, metrics, inputs=inputs)
    return metrics
