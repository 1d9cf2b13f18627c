"""MLflow record of a study: one parent run per invocation, one nested child run per trial.

Written with ``mlflow.MlflowClient`` through :mod:`metafgnet.tracking.writer`, as every run of
the package (the optuna-integration callback is deprecated).
The tracking URI and experiment come from :mod:`metafgnet.tracking` (``MLFLOW_TRACKING_URI``,
else ``sqlite:///<repo root>/mlflow.db``; ``tracking.experiment``). Worker processes receive a
picklable :class:`TrackerRef` and log their trials as children of the invocation's parent.

Child run of a trial: run name ``trial-<number>``; params = the trial's values (dotted keys);
metric ``val_top1`` stepped by fine-tuning epoch (the intermediate values the pruner sees) and
``value`` (the objective); tags ``optuna.state`` (COMPLETE / PRUNED / FAIL),
``optuna.trial_number``, ``optuna.study_name``. MLflow status: FINISHED (COMPLETE), KILLED
(PRUNED: stopped early by the pruner), FAILED (FAIL). A trial whose worker was killed is
failed by the heartbeat later; :meth:`TrialLogger.sync_failed` then closes its child run too.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping
from typing import Any

from metafgnet.params import Params, flatten, to_dict
from metafgnet.tracking import run_tags
from metafgnet.tracking.writer import RunSpec, end_run, start_run

ROLE_PARENT = "tune"
ROLE_TRIAL = "trial"
STATE_TAG = "optuna.state"
RUN_ID_ATTR = "mlflow_run_id"  # trial user attribute: the trial's child run
_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


@dataclasses.dataclass(frozen=True)
class TrackerRef:
    """Where the trials of one invocation are logged (picklable for worker processes)."""

    uri: str
    experiment_id: str
    parent_run_id: str
    study_name: str


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def start_parent(params: Params, study_name: str, storage: str, workers: int) -> TrackerRef | None:
    """Open the invocation's parent run (None when ``tracking.enabled`` is false)."""
    if not params.tracking.enabled:
        return None
    from metafgnet.tracking.experiment import open_session
    from metafgnet.tuning.space import describe

    session = open_session(params.tracking)
    tune = {k: v for k, v in flatten({"tune": to_dict(params.tune)}).items()
            if not k.startswith("tune.space.")}
    spec = RunSpec(
        f"tune-{study_name}-{time.strftime('%Y%m%d-%H%M%S')}", ROLE_PARENT,
        {**run_tags.provenance_tags(params), "optuna.study_name": study_name,
         "optuna.storage": storage},
        {**tune, **{f"tune.{k}": v for k, v in describe(params.tune).items()},
         "tune.workers_this_invocation": workers, "seed": params.seed})
    run_id = start_run(session.client, session.experiment_id, spec)
    return TrackerRef(session.uri, session.experiment_id, run_id, study_name)


def finish_parent(ref: TrackerRef | None, metrics: Mapping[str, float], artifacts: list,
                  status: str = "FINISHED") -> None:
    """Log the study's summary metrics and files on the parent run and end it."""
    if ref is None:
        return
    client = _client(ref.uri)
    for key, value in metrics.items():
        client.log_metric(ref.parent_run_id, key, float(value))
    for path in artifacts:
        client.log_artifact(ref.parent_run_id, str(path))
    end_run(client, ref.parent_run_id, status)


@dataclasses.dataclass
class TrialLogger:
    """Child runs of the trials one worker runs (no-op when ``ref`` is None)."""

    ref: TrackerRef | None

    @functools.cached_property
    def _client(self):
        return _client(self.ref.uri)

    def start(self, trial: Any, values: Mapping[str, Any], worker: int) -> str | None:
        """Open the child run of ``trial`` and remember its id in the trial's user attrs."""
        if self.ref is None:
            return None
        tags = {STATE_TAG: "RUNNING", "optuna.trial_number": str(trial.number),
                "optuna.study_name": self.ref.study_name, "worker": str(worker)}
        run_id = start_run(self._client, self.ref.experiment_id, RunSpec(
            f"trial-{trial.number}", ROLE_TRIAL, tags, values, self.ref.parent_run_id))
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        return run_id

    def intermediate(self, run_id: str | None, step: int, value: float) -> None:
        if run_id is not None:
            self._client.log_metric(run_id, "val_top1", float(value), step=int(step))

    def finish(self, run_id: str | None, state: str, value: float | None = None,
               error: str | None = None) -> None:
        """Record the trial's final ``state`` (COMPLETE / PRUNED / FAIL) and end its run."""
        if run_id is None:
            return
        if value is not None:
            self._client.log_metric(run_id, "value", float(value))
        self._client.set_tag(run_id, STATE_TAG, state)
        end_run(self._client, run_id, _STATUS[state], error)

    def sync_failed(self, trials: list) -> int:
        """Close the child runs of FAIL trials still RUNNING in MLflow (killed workers)."""
        if self.ref is None:
            return 0
        closed = 0
        for trial in trials:
            run_id = trial.user_attrs.get(RUN_ID_ATTR)
            if trial.state.name != "FAIL" or not run_id:
                continue
            try:
                status = self._client.get_run(run_id).info.status
            except Exception:  # a run of another tracking store: not ours to close
                continue
            if status == "RUNNING":
                self.finish(run_id, "FAIL", error="worker lost (heartbeat stale)")
                closed += 1
        return closed
