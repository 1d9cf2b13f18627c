"""Everything that talks to MLflow for one stage run, behind plain-data methods.

A :class:`Recorder` opens the stage's child run (and the execution's parent), records metrics,
params, tags, artifacts, dataset inputs and models, and ends both runs. Its arguments and
results are plain Python values (strings, numbers, dicts, tuples, paths, a model object), so it
serves in the execution's tracking agent (:mod:`metafgnet.tracking.agent`, the default, which
says why) or in the stage process itself (``tracking.agent: false``); its public methods are
the calls a stage may make (:func:`operations`). Stores are opened once per process and
experiment (:func:`session_for`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metafgnet.credentials import redact_text
from metafgnet.params import TrackingParams
from metafgnet.tracking import run_tags
from metafgnet.tracking.datasets import DatasetInput
from metafgnet.tracking.experiment import Session, Target, connect, store_lock
from metafgnet.tracking.models import Decision, model_metrics
from metafgnet.tracking.models import log_model as _log_model
from metafgnet.tracking.models import register_model as _register_model
from metafgnet.tracking.uri import TrackingError
from metafgnet.tracking.writer import (
    RunSpec,
    end_run,
    error_text,
    find_or_create_parent,
    mark_parent,
    start_run,
)

log = logging.getLogger(__name__)

SYSTEM_METRICS_INTERVAL_S = 10.0  # MLflow's default; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides

_SESSIONS: dict[tuple, Session] = {}
_SESSIONS_LOCK = threading.Lock()
# MLflow 3 takes a logged model's experiment from process state (see _use_as_default), so
# model logging and registration are serialised within a process.
_MODELS_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Opened:
    """The runs a :meth:`Recorder.open` made or found."""

    run_id: str
    parent_id: str
    experiment_id: str


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """What :meth:`Recorder.open` opens, and where."""

    target: Target
    tracking: TrackingParams
    root: str
    run: RunSpec
    parent: RunSpec
    system_metrics: bool


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A logged model: ``models:/<model_id>`` loads it (``mlflow.pytorch.load_model``)."""

    model_uri: str
    model_id: str | None
    name: str


@dataclasses.dataclass(frozen=True)
class VersionRef:
    """A registered model version: ``models:/<name>@<alias>`` loads it. ``alias`` is the one it
    got (``champion``, or ``challenger`` when it did not beat the champion: ``decision``)."""

    name: str
    version: int
    alias: str
    decision: Decision | None = None


def session_for(target: Target, tracking: TrackingParams, root: str | Path | None) -> Session:
    """The store and experiment of ``target``, opened once per process (thread-safe)."""
    key = (target, tracking.experiment, None if root is None else str(root))
    with _SESSIONS_LOCK:
        if key not in _SESSIONS:
            try:
                _SESSIONS[key] = connect(target, tracking, root)
            except Exception as exc:
                if (problem := unreadable_store(exc, target.uri)) is not None:
                    raise problem from None
                raise
        return _SESSIONS[key]


_UNREADABLE = ("file is not a database", "database disk image is malformed",
               "unable to open database file")


def unreadable_store(exc: BaseException, uri: str) -> TrackingError | None:
    """A local sqlite store that exists but cannot be read (truncated, corrupt, not a database,
    unreadable) as one :class:`TrackingError` naming it and the fix, instead of SQLAlchemy's
    traceback; None for any other error."""
    seen, chain = [], exc
    while chain is not None and len(seen) < 10:
        seen.append(str(chain))
        chain = chain.__cause__ or chain.__context__
    found = next((m for m in _UNREADABLE if any(m in text for text in seen)), None)
    if found is None or not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):]
    return TrackingError(
        f"the MLflow store {path} cannot be read ({found}): it is truncated, corrupt or not an "
        f"MLflow database.\nFix: restore it from a backup, or move it aside (`mv {path} "
        f"{path}.broken`) and rerun: a new store is created. To record elsewhere, set "
        "MLFLOW_TRACKING_URI.")


class Recorder:
    """MLflow records of one stage run; call :meth:`open` first, then the logging methods,
    then :meth:`finish` or :meth:`fail`."""

    def __init__(self) -> None:
        self._session: Session | None = None
        self._run_id: str | None = None
        self._parent_id: str | None = None
        self._monitor = None
        self._ended = False
        self._stage = ""
        self._tags: Mapping[str, str] = {}  # the child run's

    # -- opening ---------------------------------------------------------------------------

    def open(self, spec: StageSpec) -> Opened:
        """Find or create the execution's parent run, then create the stage's child run under
        it (:mod:`metafgnet.tracking.writer`)."""
        self._stage, self._tags = spec.run.name, spec.run.tags
        session = session_for(spec.target, spec.tracking, spec.root)
        parent_id = find_or_create_parent(session, spec.parent)
        mark_parent(session.client, parent_id, "RUNNING")
        run_id = start_run(session.client, session.experiment_id,
                           dataclasses.replace(spec.run, parent_id=parent_id))
        if spec.system_metrics:
            self._monitor = _start_system_metrics(run_id, session.uri)
        self._session, self._run_id, self._parent_id = session, run_id, parent_id
        return Opened(run_id, parent_id, session.experiment_id)

    @property
    def _client(self):
        assert self._session is not None, "Recorder.open() first"
        return self._session.client

    # -- logging ---------------------------------------------------------------------------

    def log_metrics(self, values: list[tuple[str, float, int, int]]) -> None:
        """``(key, value, timestamp_ms, step)`` tuples, at most 1000 per call (MLflow's limit)."""
        from mlflow.entities import Metric

        self._client.log_batch(self._run_id, metrics=[
            Metric(key=k, value=v, timestamp=ts, step=step) for k, v, ts, step in values])

    def log_params(self, params: dict[str, Any]) -> None:
        """Extra params (derived values, as text without URL user information); a key already
        logged must keep its value."""
        from mlflow.entities import Param

        self._client.log_batch(self._run_id, params=[
            Param(str(k), run_tags.param_value(v)) for k, v in params.items()])

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Tags (values as text, any URL in them without its user information)."""
        from mlflow.entities import RunTag

        self._client.log_batch(self._run_id, tags=[
            RunTag(str(k), redact_text(str(v))) for k, v in tags.items()])

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self._run_id, path, artifact_path)

    def log_artifacts(self, directory: str, artifact_path: str | None = None) -> None:
        self._client.log_artifacts(self._run_id, directory, artifact_path)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self._client.log_dict(self._run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self._run_id, text, artifact_file)

    def log_datasets(self, datasets: list[DatasetInput]) -> None:
        """Dataset inputs of the run (:mod:`metafgnet.tracking.datasets`): metadata only, the
        data is not read."""
        import json

        from mlflow.entities import Dataset, InputTag
        from mlflow.entities import DatasetInput as MlflowDatasetInput
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        # the entities MLflow's own Dataset._to_mlflow_entity() makes for a dataset with a local
        # source (source_type "local", source {"uri": ...}), built directly: no data to load
        inputs = [MlflowDatasetInput(
            Dataset(name=d.name, digest=d.digest, source_type="local",
                    source=json.dumps({"uri": d.source}), profile=json.dumps(d.profile)),
            tags=[InputTag(MLFLOW_DATASET_CONTEXT, d.context)]) for d in datasets]
        self._client.log_inputs(self._run_id, datasets=inputs)

    def log_model(self, model, name: str, input_example: Any, step: int = 0,
                  metrics: dict[str, float] | None = None,
                  datasets: dict[str, tuple[str, str]] | None = None) -> ModelRef:
        """:func:`metafgnet.tracking.models.log_model`, then ``metrics`` linked to the new model
        (:func:`metafgnet.tracking.models.model_metrics`)."""
        with _MODELS_LOCK:
            self._use_as_default()
            info = _log_model(model, name, input_example, run_id=self._run_id, step=step)
        model_id = getattr(info, "model_id", None)
        if metrics and model_id:
            self._client.log_batch(self._run_id, metrics=model_metrics(
                model_id, metrics, timestamp_ms=int(time.time() * 1000), step=step,
                datasets=datasets))
        return ModelRef(info.model_uri, model_id, name)

    def register_model(self, model_uri: str, name: str, alias: str) -> VersionRef:
        """:func:`metafgnet.tracking.models.register_model` (the champion rule), the version
        tagged with the run's execution, DVC experiment, commit and stage; the run gets the tags
        ``registered_model``, ``registry.decision`` and ``registry.note``."""
        tags = {k: v for k, v in self._tags.items() if k in (
            run_tags.EXECUTION, run_tags.DVC_EXP_NAME, run_tags.GIT_COMMIT, run_tags.STAGE)}
        # the read-compare-move of the alias is not atomic in MLflow: serialised here within the
        # process and, for a sqlite store, between the processes of this machine
        with _MODELS_LOCK, store_lock(self._session.uri, "registry"):
            self._use_as_default()
            version, decision = _register_model(self._client, model_uri, name, alias, tags=tags)
        ref = VersionRef(version.name, int(version.version), decision.alias, decision)
        self.set_tags({"registered_model": f"{ref.name}/{ref.version}@{decision.alias}",
                       "registry.decision": "champion" if decision.promoted else "challenger",
                       "registry.note": decision.describe()})
        return ref

    def set_experiment_tags(self, tags: dict[str, str]) -> None:
        """Tags of the run's experiment (the runs-table view of :mod:`metafgnet.tracking.views`)."""
        for key, value in tags.items():
            self._client.set_experiment_tag(self._session.experiment_id, key, value)

    def _use_as_default(self) -> None:
        """Make this run's store MLflow's default (model logging and the registry use it)."""
        import mlflow

        session = self._session
        if mlflow.get_tracking_uri() != session.uri:
            mlflow.set_tracking_uri(session.uri)
        # MLflow 3 creates a logged model in the *default* experiment whatever run_id says:
        # without this it lands in experiment 0, under a relative ./mlruns of the cwd
        os.environ["MLFLOW_EXPERIMENT_ID"] = session.experiment_id

    def pid(self) -> int:
        """The process writing the records: the tracking agent, or the stage itself."""
        return os.getpid()

    def summarise_execution(self, metrics: dict[str, float], tags: dict[str, str],
                            stages: list[str]) -> dict[str, list[str]]:
        """Put the headline of the pipeline state on the execution's parent run.

        ``metrics`` and ``tags`` (:mod:`metafgnet.reporting.summary`) go on the parent with
        ``pipeline/wall_s`` (from the parent's start) and the pipeline ``stages`` that ran in
        this execution (its child runs) or were reused from earlier ones; its description
        says what differs from the baseline. Returns ``{"ran": [...], "reused": [...]}``.
        """
        from mlflow.entities import Metric, RunTag

        client, parent_id = self._client, self._parent_id
        parent = client.get_run(parent_id)
        children = client.search_runs(
            [self._session.experiment_id], max_results=1000,
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
        done = {c.data.tags.get(run_tags.STAGE) for c in children}
        ran = [s for s in stages if s in done]
        reused = [s for s in stages if s not in done]
        now = int(time.time() * 1000)
        values = {**metrics, "pipeline/wall_s": (now - parent.info.start_time) / 1000,
                  "pipeline/stages_ran": len(ran), "pipeline/stages_reused": len(reused)}
        note = run_tags.execution_note(parent.data.tags, ran, reused, metrics, tags)
        all_tags = {**tags, run_tags.STAGES_RAN: " ".join(ran),
                    run_tags.STAGES_REUSED: " ".join(reused), "mlflow.note.content": note}
        client.log_batch(parent_id,
                         metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
                         tags=[RunTag(k, v) for k, v in all_tags.items()])
        return {"ran": ran, "reused": reused}

    # -- ending ----------------------------------------------------------------------------

    def _end(self, status: str) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        end_run(self._client, self._run_id, status)
        self._ended = True

    def finish(self) -> None:
        """The child run FINISHED; the parent FINISHED unless an earlier stage failed."""
        self._end("FINISHED")
        mark_parent(self._client, self._parent_id, "FINISHED")

    def fail(self, status: str, summary: str, traceback_text: str, stage: str) -> None:
        """Record the error on child and parent and end both with ``status``; never raises.
        The user information of any URL in the texts is left out (:mod:`metafgnet.credentials`)."""
        client = self._client
        steps = [
            lambda: client.set_tag(self._run_id, run_tags.ERROR, error_text(summary)),
            lambda: client.log_text(self._run_id, redact_text(traceback_text),
                                    "error/traceback.txt"),
            lambda: self._end(status),
            lambda: mark_parent(client, self._parent_id, status),
            lambda: client.set_tag(self._parent_id, run_tags.FAILED_STAGE, stage),
            lambda: client.set_tag(self._parent_id, run_tags.ERROR,
                                   error_text(f"{stage}: {summary}")),
        ]
        for step in steps:
            try:
                step()
            except Exception as err:  # keep going: the stage's own error matters most
                log.error("while recording the failure of %s in %s: %s", stage,
                          redact_text(self._session.uri), err)

    def abandon(self) -> bool:
        """End a run whose stage went away without ending it (a killed stage process) as
        KILLED; True if there was one."""
        if self._run_id is None or self._ended:
            return False
        self.fail("KILLED", "the stage process ended without closing its run (killed?)", "",
                  self._stage)
        return True


LIFECYCLE = frozenset({"open", "finish", "fail"})  # made by StageRun itself, at its start and end


def operations() -> frozenset[str]:
    """The calls a stage may make on a :class:`Recorder`, here or in the tracking agent: its
    public methods, less ``abandon`` (the agent's own, when a stage's connection drops). Read
    from the class on each call, so a method added to it is an operation, with no list to keep
    (:class:`~metafgnet.tracking.runs.StageRun` forwards those outside :data:`LIFECYCLE`)."""
    return frozenset(name for name, member in vars(Recorder).items()
                     if callable(member) and not name.startswith("_")) - {"abandon"}


_GPU_NOTES_SEEN: set[str] = set()


def _quiet_gpu_note(record: logging.LogRecord) -> bool:
    """Logging filter: MLflow logs "Skip logging GPU metrics..." for every monitor it starts on
    a machine without a usable NVIDIA (or AMD) GPU, dropped here; its per-sample GPU read errors
    (``gpu_monitor``) pass once per message."""
    message = record.getMessage()
    if message.startswith("Skip logging GPU metrics"):
        if message not in _GPU_NOTES_SEEN:
            _GPU_NOTES_SEEN.add(message)
            log.debug("system metrics without GPU samples (no usable NVIDIA/AMD GPU)")
        return False
    if record.name.endswith("gpu_monitor"):
        if message in _GPU_NOTES_SEEN:
            return False
        _GPU_NOTES_SEEN.add(message)
    return True


def _start_system_metrics(run_id: str, uri: str):
    """CPU, memory, disk, network and (with ``nvidia-ml-py``, a dependency, and an NVIDIA GPU)
    GPU samples on ``run_id``, every ``SYSTEM_METRICS_INTERVAL_S``.

    MLflow's public switches (``mlflow.start_run(log_system_metrics=True)``,
    ``mlflow.enable_system_metrics_logging()``) start a monitor only for the *fluent active
    run* of the calling thread; these runs are made with ``MlflowClient.create_run`` and never
    made active (one agent serves several stages at once; the active run is per thread and
    ``end_run`` would end it with its own status). So the monitor those switches start,
    ``SystemMetricsMonitor``, is attached to the run directly; it honours the same
    ``MLFLOW_SYSTEM_METRICS_*`` variables. On a machine without a GPU, MLflow's note about it is
    silenced (:func:`_quiet_gpu_note`).
    """
    for name in ("mlflow.system_metrics.system_metrics_monitor",
                 "mlflow.system_metrics.metrics.gpu_monitor"):
        logger = logging.getLogger(name)
        if _quiet_gpu_note not in logger.filters:
            logger.addFilter(_quiet_gpu_note)
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                       tracking_uri=uri)
    except Exception as exc:  # psutil missing: the run is still recorded, without samples
        log.warning("system metrics are off for run %s: %s", run_id, exc)
        return None
    monitor.start()
    return monitor
