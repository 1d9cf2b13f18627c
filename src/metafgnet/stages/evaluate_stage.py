"""Evaluation of every fine-tuned arm: validation and test top-1, mean class accuracy.

Each arm's model was chosen on the validation split by its fine-tuning stage; the best arm is
the one with the highest validation top-1 (test is reported, never used to choose).
"""

from __future__ import annotations

from pathlib import Path

from metafgnet.distributed import sharded_evaluate
from metafgnet.evaluation import ARMS
from metafgnet.io import csv_text, write_json, write_text, write_tsv
from metafgnet.models.files import load_model
from metafgnet.stages.context import StageContext


def run_evaluate(ctx: StageContext, models: Path, out: Path, metrics_path: Path) -> dict:
    """Every arm on val and test; ``metrics_path`` (git-tracked, compared by ``dvc exp show``)
    gets ``{arm: {val_top1, test_top1, test_mean_class_acc}}``, the run ``<metric>/<arm>``."""
    val_ds, test_ds = ctx.target("val", None), ctx.target("test", None)
    metrics, confusions = {}, {}
    for arm in ARMS:
        model, _ = load_model(models / arm / "model.pt", ctx.device)
        val, test = (sharded_evaluate(model, ds, dist=ctx.dist, device=ctx.device,
                                      batch_size=256, loader_kwargs=ctx.loader_kwargs)
                     for ds in (val_ds, test_ds))
        metrics[arm] = {"val_top1": val["top1"], "test_top1": test["top1"],
                        "test_mean_class_acc": test["mean_class_acc"]}
        confusions[arm] = test
        ctx.run.log_metrics({f"{key}/{arm}": value for key, value in metrics[arm].items()},
                            step=0)
    if not ctx.dist.is_main:
        return metrics
    best = max(ARMS, key=lambda a: (metrics[a]["val_top1"], -ARMS.index(a)))
    names = ctx.data.target_classes
    rows = [{"actual": names[int(y)], "predicted": names[int(p)]}
            for y, p in zip(confusions[best]["labels"], confusions[best]["predictions"], strict=True)]
    write_tsv(out / "predictions.tsv", rows)
    write_text(out / "confusion.csv",
               csv_text(["actual", "predicted"], ([r["actual"], r["predicted"]] for r in rows)))
    write_json(metrics_path, metrics)
    write_json(out / "best.json", {"best_arm": best, "chosen_on": "val_top1"})
    ctx.run.log_artifact(metrics_path)
    ctx.run.set_tags({"best_arm": best})
    if ctx.tracking.log_models:
        # the best arm, with its scores linked to the logged model (val on target-val, test on
        # target-test), registered under a stable name: "champion" moves to it only if its
        # val_top1 beats the champion's, else it is the "challenger" (tracking.models)
        model, _ = load_model(models / best / "model.pt")
        info = ctx.run.log_model(model.target_net(), name=f"best-{best}",
                                 input_example=val_ds[0][0].unsqueeze(0), metrics=metrics[best])
        if info is not None:
            ctx.run.register_model(info.model_uri)
    return {"best_arm": best, **metrics}
