"""One child run per stage that actually runs, under its execution's parent run.

A stage script wraps its work in :func:`stage_run`::

    with stage_run("meta_train", params, ["data", "model", "meta"], data_digest=digest) as run:
        for step in ...:
            run.log_metrics({"loss": loss}, step=step)   # buffered, sent every few seconds
        info = run.log_model(model, "model", input_example=images)

Entering checks the tracking location at once (an unreachable server fails the stage before any
work) and then opens the runs *in the background*: importing MLflow and opening a sqlite store
costs 1-3 s per process, and this way overlaps with the stage's own work. Metrics logged
meanwhile wait in memory; other calls wait for the run. The child run is named after the stage
and carries the params sections the stage reads (dotted keys), ``seed`` and the provenance tags
of :mod:`metafgnet.tracking.record`; see :mod:`metafgnet.tracking.parent` for the parent.

A stage that raises ends its child run FAILED (KILLED on Ctrl-C) with the error as the ``error``
tag and ``error/traceback.txt``, and marks the parent FAILED with ``failed_stage``.

Use the yielded run's methods, not ``mlflow.log_*``: no MLflow run is made *active* (the fluent
API's active run is per thread), so fluent calls would start an unrelated run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from metafgnet.params import Params, TrackingParams
from metafgnet.tracking import record
from metafgnet.tracking.buffer import MetricBuffer
from metafgnet.tracking.experiment import Session, Target, connect, resolve_target
from metafgnet.tracking.models import DEFAULT_ALIAS
from metafgnet.tracking.models import log_model as _log_model
from metafgnet.tracking.models import register_model as _register_model
from metafgnet.tracking.null import NullRun
from metafgnet.tracking.parent import find_or_create_parent, mark_parent
from metafgnet.tracking.uri import TrackingError, redact

log = logging.getLogger(__name__)

TRAINING_STAGES = frozenset({"pretrain", "meta_train", "meta_train_selected", "finetune"})
SYSTEM_METRICS_INTERVAL_S = 2.0  # a 20 s stage gets about 10 samples of CPU, memory (and GPU)


def is_training_stage(stage: str) -> bool:
    """``finetune@arm`` counts as ``finetune``."""
    return stage.split("@", 1)[0] in TRAINING_STAGES


class StageRun:
    """The child run of one stage, as yielded by :func:`stage_run`."""

    enabled = True

    def __init__(self, stage: str, params: Params, tracking: TrackingParams, target: Target,
                 tags: dict[str, str], child_params: dict[str, str], system_metrics: bool,
                 root: str | Path | None = None):
        self.stage = stage
        self.tracking_uri = target.uri
        self._tracking = tracking
        self._tags = tags
        self._buffer = MetricBuffer(target.uri)
        self._session: Session | None = None
        self._run_id: str | None = None
        self._parent_id: str | None = None
        self._monitor = None
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._open, name=f"tracking-open-{stage}", daemon=True,
            args=(params, target, child_params, system_metrics, root),
        )
        self._thread.start()

    # -- opening (background thread) ------------------------------------------------------

    def _open(self, params, target, child_params, system_metrics, root) -> None:
        try:
            from mlflow.entities import Param
            from mlflow.tracking.context.registry import resolve_tags
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            session = connect(target, self._tracking, root)
            parent_id = find_or_create_parent(session, params, self._tags)
            mark_parent(session.client, parent_id, "RUNNING")
            tags = {**self._tags, record.ROLE: "stage", record.STAGE: self.stage,
                    MLFLOW_PARENT_RUN_ID: parent_id}
            run = session.client.create_run(session.experiment_id, run_name=self.stage,
                                            tags=resolve_tags(tags))
            run_id = run.info.run_id
            session.client.log_batch(run_id, params=[Param(k, v)
                                                     for k, v in child_params.items()])
            if system_metrics:
                self._monitor = _start_system_metrics(run_id, session.uri)
            self._session, self._parent_id, self._run_id = session, parent_id, run_id
            self._buffer.attach(session.client, run_id)
        except BaseException as exc:  # re-raised in the stage's thread by _ready()
            self._open_error = exc

    def _ready(self) -> Session:
        """Wait for the run to be open; raise if opening it failed."""
        self._thread.join()
        if self._open_error is not None:
            raise TrackingError(
                f"could not open the MLflow run of stage {self.stage!r} at "
                f"{redact(self.tracking_uri)}: {self._open_error}") from self._open_error
        assert self._session is not None
        return self._session

    def _use_as_default(self) -> Session:
        """Make this run's URI MLflow's default (model logging and the registry use it)."""
        import mlflow

        session = self._ready()
        if mlflow.get_tracking_uri() != session.uri:
            mlflow.set_tracking_uri(session.uri)
        # MLflow 3 creates a logged model in the *default* experiment whatever run_id says:
        # without this it lands in experiment 0, under a relative ./mlruns of the cwd
        os.environ["MLFLOW_EXPERIMENT_ID"] = session.experiment_id
        return session

    @property
    def run_id(self) -> str:
        self._ready()
        return self._run_id

    @property
    def parent_run_id(self) -> str:
        self._ready()
        return self._parent_id

    @property
    def experiment_id(self) -> str:
        return self._ready().experiment_id

    # -- logging ---------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record scalar metrics at ``step``; batched, so calling it every few steps is cheap.

        Each value goes through ``float()``: on a CUDA tensor that synchronises the device.
        """
        if self._open_error is not None:
            self._ready()  # raises: tracking is broken, stop the stage now
        self._buffer.add(metrics, step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Extra params (derived values); a key already logged must keep its value."""
        from mlflow.entities import Param

        self._ready().client.log_batch(self.run_id, params=[
            Param(str(k), record.param_value(v)) for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._ready().client.log_batch(
            self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._ready().client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self._ready().client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """``obj`` as JSON or YAML (by the file's extension) under ``artifact_file``."""
        self._ready().client.log_dict(self.run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._ready().client.log_text(self.run_id, text, artifact_file)

    def flush(self) -> None:
        """Send buffered metrics now (done automatically every few seconds and at the end)."""
        self._ready()
        self._buffer.flush()

    def log_model(self, model, name: str, input_example: Any):
        """Log a PyTorch model (see :mod:`metafgnet.tracking.models`); returns ``ModelInfo``
        (``.model_uri`` names it), or None when ``tracking.log_models`` is false."""
        if not self._tracking.log_models:
            return None
        self._use_as_default()
        return _log_model(model, name, input_example, run_id=self.run_id)

    def register_model(self, model_uri: str, name: str | None = None,
                       alias: str = DEFAULT_ALIAS):
        """Register ``model_uri`` under ``name`` (default ``tracking.registered_model``) with
        ``alias`` moved to the new version; returns the ``ModelVersion``."""
        session = self._use_as_default()
        name = name or self._tracking.registered_model
        tags = {k: self._tags[k] for k in (record.EXECUTION, record.DVC_EXP_NAME,
                                            record.GIT_COMMIT) if k in self._tags}
        version = _register_model(session.client, model_uri, name, alias,
                                  tags={**tags, record.STAGE: self.stage})
        self.set_tags({"registered_model": f"{name}/{version.version}@{alias}"})
        return version

    # -- ending ----------------------------------------------------------------------------

    def _end(self, status: str) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        self._session.client.set_terminated(self._run_id, status)

    def _finish(self) -> None:
        session = self._ready()
        try:
            self._buffer.flush(final=True)
        except Exception as exc:
            self._fail(exc)
            raise
        self._end("FINISHED")
        mark_parent(session.client, self._parent_id, "FINISHED")

    def _fail(self, exc: BaseException) -> None:
        """Record the error and end child and parent; never masks ``exc``."""
        self._thread.join()
        if self._open_error is not None:
            log.error("stage %s failed before its MLflow run was open (%s)", self.stage,
                      self._open_error)
            return
        client = self._session.client
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        summary = f"{type(exc).__name__}: {exc}"[:5000]
        steps = [
            lambda: self._buffer.flush(final=True),
            lambda: client.set_tag(self._run_id, record.ERROR, summary),
            lambda: client.log_text(self._run_id, "".join(traceback.format_exception(exc)),
                                    "error/traceback.txt"),
            lambda: self._end(status),
            lambda: mark_parent(client, self._parent_id, status),
            lambda: client.set_tag(self._parent_id, record.FAILED_STAGE, self.stage),
            lambda: client.set_tag(self._parent_id, record.ERROR,
                                   f"{self.stage}: {summary}"[:5000]),
        ]
        for step in steps:
            try:
                step()
            except Exception as err:  # keep going: the stage's own error matters most
                log.error("while recording the failure of %s in %s: %s", self.stage,
                          redact(self.tracking_uri), err)


def _start_system_metrics(run_id: str, uri: str):
    """CPU, memory, disk, network (and GPU with ``nvidia-ml-py``) samples on ``run_id``."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                       tracking_uri=uri)
    except Exception as exc:  # psutil missing: the run is still recorded, without samples
        log.warning("system metrics are off for run %s: %s", run_id, exc)
        return None
    monitor.start()
    return monitor


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: Params,
    sections: Sequence[str] = (),
    tracking: TrackingParams | None = None,
    *,
    data_digest: str | None = None,
    device: str | None = None,
    system_metrics: bool | None = None,
    root: str | Path | None = None,
) -> Iterator[StageRun | NullRun]:
    """Track one stage as a child of its execution's parent run (module docstring).

    ``sections``: the params sections the stage reads (logged as dotted params with ``seed``).
    ``tracking``: defaults to ``params.tracking``. ``data_digest``: digest of the data manifest.
    ``device``: the resolved device (default ``params.runtime.device``). ``system_metrics``:
    default on for training stages when ``tracking.system_metrics``. ``root``: repository root
    for the local store (default: ``DVC_ROOT``, git top level, cwd).

    Raises :class:`~metafgnet.tracking.uri.TrackingUnavailable` before any work when the
    tracking server does not answer (unless ``tracking.offline``), and
    :class:`~metafgnet.tracking.uri.TrackingError` when the run cannot be recorded.
    """
    tracking = tracking if tracking is not None else params.tracking
    if not tracking.enabled:
        yield NullRun(stage)
        return
    child_params = record.stage_params(params, sections)  # bad section names fail first
    target = resolve_target(tracking, root)
    tags = record.provenance_tags(params, data_digest, device)
    if target.offline:
        tags[record.OFFLINE] = "true"
        tags[record.INTENDED_URI] = redact(target.intended_uri or "")
    log_system = (tracking.system_metrics and is_training_stage(stage)
                  if system_metrics is None else system_metrics)
    run = StageRun(stage, params, tracking, target, tags, child_params, log_system, root)
    try:
        yield run
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            run._finish()
        else:
            run._fail(exc)
        raise
    run._finish()
