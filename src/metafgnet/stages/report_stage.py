"""Stage ``report``: the Markdown report, then the execution's headline on its parent run."""

from __future__ import annotations

from pathlib import Path

from metafgnet.evaluation import ARMS
from metafgnet.io import read_json
from metafgnet.reporting.report import build_report
from metafgnet.reporting.summary import headline
from metafgnet.stages.context import StageContext
from metafgnet.tracking.views import view_tags

# Every stage of dvc.yaml but the opt-in `tune`, in pipeline order (a test holds it to dvc.yaml).
PIPELINE_STAGES = ("prepare", "pretrain", "meta_train", "select", "meta_train_selected",
                   "meta_train_random", "joint", *(f"finetune@{arm}" for arm in ARMS), "evaluate",
                   "report")


def run_report(ctx: StageContext, results: Path, models: Path, metrics: Path, leakage: Path,
               out: Path) -> dict:
    """Write ``out/report.md`` with its figures (``leakage``: the counts ``prepare`` wrote,
    :mod:`metafgnet.data.leakage`), log them, and put the headline of the
    workspace's pipeline state (:func:`metafgnet.reporting.summary.headline`) on the parent
    run. Returns the headline metrics."""
    build_report(results, models, metrics, out, ctx.params.data.target,
                 read_json(leakage), ctx.params.data.leakage.drop)
    ctx.run.log_artifacts(out)
    values, tags = headline(metrics, read_json(results / "evaluate" / "best.json"))
    ctx.run.log_metrics(values, step=0)
    ctx.run.summarise_execution(values, tags, PIPELINE_STAGES)
    ctx.run.set_experiment_tags(view_tags(ARMS))  # the runs-table view comparing executions
    return values
