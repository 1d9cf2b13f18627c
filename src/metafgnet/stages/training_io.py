"""What every training stage (pretrain, meta-training, joint, fine-tuning) reads first and
writes last: the init model it starts from and its declared outputs (``model.pt``,
``curves.tsv``, ``metrics.json``), written on rank 0."""

from __future__ import annotations

from pathlib import Path

from metafgnet.io import write_json, write_tsv
from metafgnet.models.files import load_model, save_model
from metafgnet.stages.context import StageContext
from metafgnet.training import prepare_model, remove_checkpoints
from metafgnet.training.monitor import without_timing


def write_outputs(ctx: StageContext, out: Path, model, arch: dict, curves: list[dict],
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


def load_init(ctx: StageContext, init: Path):
    """The init model on the stage's device, with its architecture params."""
    model, payload = load_model(init / "model.pt")
    return prepare_model(model, ctx.params.runtime, ctx.device), payload["model"]
