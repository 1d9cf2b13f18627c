"""MLflow tracking for the pipeline: one record per repository, one parent run per execution.

A stage script (one process of ``dvc repro`` / ``dvc exp run``)::

    from metafgnet.tracking import stage_run

    with stage_run("finetune@metafgnet", params, ["data", "model", "finetune"],
                   data_digest=manifest_digest, device=str(device)) as run:
        for step, loss in train(...):
            run.log_metrics({"train/loss": loss}, step=step)   # buffered
        info = run.log_model(model, "model", input_example=images,
                             metrics={"val_top1": val_top1})   # ModelRef | None, metrics linked
        run.log_artifact("results/finetune/metrics.json")
    # evaluate: run.register_model(best_model_uri)  -> alias "champion" if its val_top1 beats
    # the champion's, else "challenger"; tag registry.decision
    # open_stage: run.log_datasets(prepared_data)  -> the splits as MLflow dataset inputs

Where runs go: :mod:`.uri`; which processes share a parent run: :mod:`.execution`; child runs
and failures: :mod:`.runs`; how every run (a stage's, its execution's parent) is created and
ended: :mod:`.writer`; tag keys, provenance tags and flattened params: :mod:`.run_tags`; every
MLflow call of a stage run: :mod:`.recorder`, made by the execution's tracking agent
(:mod:`.agent`) or, with ``tracking.agent: false``, by the stage process (a new kind of call is a
public method of ``Recorder`` with plain-data arguments: the agent dispatches it and the stage's
run, :class:`.runs.StageRun`, forwards it, a no-op when nothing is recorded); models, their
metrics and the registry's champion rule: :mod:`.models`; dataset inputs: :mod:`.datasets`;
offline mode: :mod:`.experiment`.

Importing this package does not import MLflow (a large import, paid only where records are
made); it only turns MLflow's telemetry off and bounds its HTTP retries in the environment
(``setdefault``: explicit settings win).
"""

from metafgnet.tracking.execution import EXECUTION_ENV, execution_id
from metafgnet.tracking.runs import StageRun, is_training_stage, stage_run
from metafgnet.tracking.uri import (
    TrackingError,
    TrackingUnavailable,
    configure_environment,
    repo_root,
    tracking_uri,
)

configure_environment()

__all__ = [
    "EXECUTION_ENV",
    "StageRun",
    "TrackingError",
    "TrackingUnavailable",
    "execution_id",
    "is_training_stage",
    "repo_root",
    "stage_run",
    "tracking_uri",
]
