"""Stages 2 and 4 (docs/method.md, "The stages"): MetaFGNet meta-training on all, the selected,
or (the control for selection) a random subset of the auxiliary data."""

from __future__ import annotations

from pathlib import Path

from metafgnet.distributed import sharded_evaluate
from metafgnet.stages.context import StageContext
from metafgnet.stages.training_io import load_init, write_outputs
from metafgnet.training import meta_train, subset_schedule
from metafgnet.training.cost import PeakMemory, loop_cost


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
    model, arch = load_init(ctx, init)
    model.reset_target_head(len(ctx.data.target_classes))
    if selection is None:
        records = ctx.data.auxiliary
    else:
        # imported here: only the stages trained on a subset depend on the selection code
        from metafgnet.selection.subsets import read_subset

        records = read_subset(selection)
    if random_like:
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
    write_outputs(ctx, out, model, arch, curves, metrics, metrics_path, inputs=tuple(inputs))
    return metrics
