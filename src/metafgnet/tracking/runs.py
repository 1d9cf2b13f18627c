"""One child run per stage that actually runs, under its execution's parent run.

A stage script wraps its work in :func:`stage_run` (example: :mod:`metafgnet.tracking`).
Entering checks the tracking location at once (an unreachable server fails the stage before any
work) and then opens the runs *in the background*, through a
:class:`~metafgnet.tracking.recorder.Recorder`: by default the one of the execution's tracking
agent (:mod:`metafgnet.tracking.agent`), so the stage process never imports MLflow; with
``tracking.agent: false`` one in this process. Metrics logged meanwhile wait in memory; other
calls wait for the run. The child run is named after the stage and carries the params sections
the stage reads (dotted keys), ``seed`` and the provenance tags of
:mod:`metafgnet.tracking.run_tags`; see :mod:`metafgnet.tracking.writer` for the parent.

A stage that raises ends its child run FAILED (KILLED on Ctrl-C or SIGTERM) with the error as the ``error``
tag and ``error/traceback.txt``, and marks the parent FAILED with ``failed_stage``.

Use the yielded run's methods, not ``mlflow.log_*``: no MLflow run is made *active* (the fluent
API's active run is per thread), so fluent calls would start an unrelated run.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from metafgnet.credentials import auth_hint, redact_text
from metafgnet.params import Params, TrackingParams
from metafgnet.provenance import repo_root
from metafgnet.tracking import buffer, run_tags
from metafgnet.tracking.buffer import MetricBuffer
from metafgnet.tracking.datasets import metric_dataset, prepared_datasets
from metafgnet.tracking.experiment import resolve_target
from metafgnet.tracking.models import DEFAULT_ALIAS, check_alias
from metafgnet.tracking.recorder import LIFECYCLE, Opened, Recorder, StageSpec, operations
from metafgnet.tracking.uri import TrackingError
from metafgnet.tracking.writer import RunSpec, parent_name

log = logging.getLogger(__name__)

LOG_MODEL_SECONDS = "tracking/log_model_seconds"  # as the stage waited for it, one per model
TRAINING_STAGES = frozenset({"pretrain", "meta_train", "meta_train_selected", "meta_train_random",
                             "joint", "finetune"})


def is_training_stage(stage: str) -> bool:
    """``finetune@arm`` counts as ``finetune``."""
    return stage.split("@", 1)[0] in TRAINING_STAGES


def _recorder(tracking: TrackingParams, uri: str, execution: str):
    if tracking.agent:
        from metafgnet.tracking.agent import RemoteRecorder

        return RemoteRecorder(uri, execution)
    return Recorder()


class NullRecorder:
    """Every Recorder operation, doing nothing and returning None (:meth:`StageRun.null`)."""

    def __getattr__(self, op: str):
        if op not in operations():
            raise AttributeError(op)
        return lambda *args, **kwargs: None


class StageRun:
    """The child run of one stage, as yielded by :func:`stage_run`. Every Recorder operation
    outside :data:`~metafgnet.tracking.recorder.LIFECYCLE` is a method of it (:meth:`__getattr__`);
    those written here add what the stage side knows (buffer, paths, the datasets it logged)."""

    enabled = True

    def __init__(self, spec: StageSpec | None, tracking: TrackingParams,
                 recorder: Any = None):
        """``spec``: the runs to open; ``recorder``: the one to open them with (default: the
        execution's tracking agent's, or with ``tracking.agent: false`` one in this process)."""
        self.stage = spec.run.name if spec is not None else ""
        self.tracking_uri = spec.target.uri if spec is not None else None
        self._tracking = tracking
        self._buffer = MetricBuffer(self.tracking_uri)
        self._recorder = recorder
        self._opened = None
        self._open_error: BaseException | None = None
        # recorder calls made before the run was open, made by the opening thread once it is
        # (None from then on); the first error among them fails the stage at its end
        self._lock = threading.Lock()
        self._deferred: list[tuple[str, tuple]] | None = []
        self._deferred_error: BaseException | None = None
        self._last_step = -1  # the highest step of this run's metrics so far
        self._datasets: dict[str, str] = {}  # dataset inputs logged: name -> digest
        self._thread = threading.Thread(
            target=self._open, name=f"tracking-open-{self.stage}", daemon=True, args=(spec,))
        self._thread.start()

    @classmethod
    def null(cls, stage: str) -> StageRun:
        """The run of a stage that records nothing: every call is a no-op (returning None),
        ``enabled`` is false, ``run_id`` and the other ids are None."""
        run = cls(None, TrackingParams(enabled=False), NullRecorder())
        run.stage, run.enabled = stage, False
        return run

    def __getattr__(self, op: str):
        """A Recorder operation not written here: the same call on the recorder (plain-data
        arguments and result), once the run is open."""
        if op.startswith("_") or op in LIFECYCLE or op not in operations():
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {op!r}")
        return lambda *args, **kwargs: getattr(self._ready(), op)(*args, **kwargs)

    # -- opening (background thread) ------------------------------------------------------

    def _open(self, spec: StageSpec | None) -> None:
        try:
            if spec is None:
                self._opened = Opened(None, None, None)
            else:
                if self._recorder is None:
                    self._recorder = _recorder(self._tracking, self.tracking_uri,
                                               spec.run.tags[run_tags.EXECUTION])
                self._opened = self._recorder.open(spec)
            self._buffer.attach(self._recorder, self._opened.run_id)
        except BaseException as exc:  # re-raised in the stage's thread by _ready()
            self._open_error = exc
        with self._lock:
            deferred, self._deferred = self._deferred, None
        if self._open_error is not None:
            return
        for op, args in deferred:
            try:
                getattr(self._recorder, op)(*args)
            except Exception as exc:
                log.error("%s of stage %s failed: %s", op, self.stage, exc)
                self._deferred_error = self._deferred_error or exc

    def _call_when_open(self, op: str, *args) -> None:
        """``recorder.<op>(*args)`` now if the run is open, else as soon as it is, without
        waiting for it (the opening runs in the background)."""
        with self._lock:
            if self._deferred is not None:
                self._deferred.append((op, args))
                return
        getattr(self._ready(), op)(*args)

    def _ready(self):
        """Wait for the run to be open; raise if opening it failed. Returns the recorder."""
        self._thread.join()
        if self._open_error is not None:
            hint = auth_hint(str(self._open_error))
            raise TrackingError(
                f"could not open the MLflow run of stage {self.stage!r} at "
                f"{redact_text(self.tracking_uri)}: {self._open_error}"
                + (f"\nFix: {hint}." if hint else "")) from self._open_error
        return self._recorder

    def _ids(self) -> Opened:
        self._ready()
        return self._opened

    run_id = property(lambda self: self._ids().run_id, doc="the child run (waits for it)")
    parent_run_id = property(lambda self: self._ids().parent_id, doc="the execution's parent")
    experiment_id = property(lambda self: self._ids().experiment_id)

    # -- logging ---------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record scalar metrics at ``step``; batched, so calling it every few steps is cheap.

        Each value goes through ``float()``: on a CUDA tensor that synchronises the device (not
        on a run that records nothing: :meth:`null`, e.g. a rank other than the main one).
        """
        if not self.enabled:
            return
        if self._open_error is not None:
            self._ready()  # raises: tracking is broken, stop the stage now
        self._last_step = max(self._last_step, 0 if step is None else int(step))
        self._buffer.add(metrics, step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._ready().log_artifact(str(Path(path).resolve()), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self._ready().log_artifacts(str(Path(directory).resolve()), artifact_path)

    def flush(self) -> None:
        """Send buffered metrics now (done automatically every few seconds and at the end)."""
        self._ready()
        self._buffer.flush()

    def log_datasets(self, data) -> None:
        """The prepared data (:class:`~metafgnet.data.manifest.PreparedData`) as the run's
        dataset inputs: ``target-train``, ``target-val``, ``target-test``, ``auxiliary``
        (:mod:`metafgnet.tracking.datasets`; no image is read). Does not wait for the run to be
        open; a failure to record them fails the stage at its end."""
        datasets = prepared_datasets(data)
        self._datasets.update({d.name: d.digest for d in datasets})
        self._call_when_open("log_datasets", datasets)

    def log_model(self, model, name: str, input_example: Any,
                  metrics: Mapping[str, Any] | None = None):
        """Log a PyTorch model (:mod:`metafgnet.tracking.models`); returns a
        :class:`~metafgnet.tracking.recorder.ModelRef`, or None when ``tracking.log_models`` is
        false.

        ``metrics``: scores measured on this model (``{"val_top1": 0.81}``; values that are not
        real numbers are left out), linked to it and to the ``target-val`` / ``target-test``
        dataset (``val_*`` / ``test_*``) when the run logged the prepared data. The model takes
        the step after the stage's last metric step: MLflow links to a new model every metric
        the run already has at its step, and the stage's own metrics are none of them.
        """
        if not self._tracking.log_models:
            return None
        recorder = self._ready()
        linked = {str(k): float(v) for k, v in (metrics or {}).items()
                  if isinstance(v, numbers.Real) and not isinstance(v, bool)}
        datasets = {k: found for k in linked if (found := metric_dataset(k, self._datasets))}
        self._last_step += 1
        start = time.perf_counter()
        ref = recorder.log_model(model, name, input_example, self._last_step, linked or None,
                                 datasets or None)
        self._buffer.add({LOG_MODEL_SECONDS: time.perf_counter() - start})
        return ref

    def register_model(self, model_uri: str, name: str | None = None,
                       alias: str = DEFAULT_ALIAS):
        """Register ``model_uri`` as a new version of ``name`` (default
        ``tracking.registered_model``) under the champion rule
        (:func:`metafgnet.tracking.models.register_model`; ``val_top1`` linked by
        ``log_model(..., metrics=...)``); the decision is logged with both scores. Returns a
        :class:`~metafgnet.tracking.recorder.VersionRef`."""
        check_alias(alias)
        ref = self._ready().register_model(model_uri, name or self._tracking.registered_model,
                                           alias)
        if ref is not None and ref.decision is not None:
            outcome = ("is the new champion" if ref.decision.promoted
                       else f"stays a challenger, the {alias} is unchanged")
            log.info("registered %s v%d: %s (%s)", ref.name, ref.version, outcome,
                     ref.decision.describe())
        return ref

    def summarise_execution(self, metrics: Mapping[str, float], tags: Mapping[str, str],
                            stages: Sequence[str]) -> dict[str, list[str]]:
        """The pipeline's headline metrics (and ``tags``) on the execution's parent run, with
        the stages that ran and those reused
        (:meth:`~metafgnet.tracking.recorder.Recorder.summarise_execution`)."""
        self.flush()
        return self._ready().summarise_execution(
            {str(k): float(v) for k, v in metrics.items()},
            {str(k): str(v) for k, v in tags.items()}, list(stages))

    # -- ending ----------------------------------------------------------------------------

    def _finish(self) -> None:
        recorder = self._ready()
        deadline = time.monotonic() + buffer.FINAL_WAIT_S
        try:
            self._buffer.flush(final=True)
            if self._deferred_error is not None:
                raise TrackingError(
                    f"could not record the run of stage {self.stage!r}: "
                    f"{self._deferred_error}") from self._deferred_error
        except Exception as exc:
            self._fail(exc)
            raise
        buffer.until_answered(recorder.finish, self.tracking_uri, deadline)
        self._close()

    def _fail(self, exc: BaseException) -> None:
        """Record the error and end child and parent; never masks ``exc``."""
        self._thread.join()
        if self._open_error is not None:
            log.error("stage %s failed before its MLflow run was open (%s)", self.stage,
                      self._open_error)
            self._close()
            return
        # interrupted (Ctrl-C, or SIGTERM: TrainingInterrupted, a checkpoint was written) is
        # KILLED, not FAILED: the run did nothing wrong and resumes on the next execution
        status = ("KILLED" if isinstance(exc, KeyboardInterrupt)
                  or type(exc).__name__ == "TrainingInterrupted" else "FAILED")
        summary = f"{type(exc).__name__}: {exc}"
        try:
            self._buffer.flush(final=True)
        except Exception as err:
            log.error("while recording the failure of %s: %s", self.stage, err)
        try:
            self._recorder.fail(status, summary, "".join(traceback.format_exception(exc)),
                                self.stage)
        except Exception as err:  # the agent is gone: the stage's own error matters most
            log.error("while recording the failure of %s in %s: %s", self.stage,
                      redact_text(self.tracking_uri), err)
        self._close()

    def _close(self) -> None:
        close = getattr(self._recorder, "close", None)
        if close is not None:
            close()


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
    lineage: bool = False,
) -> Iterator[StageRun]:
    """Track one stage as a child of its execution's parent run (module docstring).

    ``sections``: the params sections the stage reads (logged as dotted params with ``seed``).
    ``tracking``: defaults to ``params.tracking``. ``data_digest``: digest of the data manifest.
    ``device``: the resolved device (default ``params.runtime.device``). ``system_metrics``:
    default on for training stages when ``tracking.system_metrics``. ``root``: repository root
    for the local store (default: ``DVC_ROOT``, git top level, cwd). ``lineage``: log every
    params section, not only ``sections``: for stages whose results the whole upstream shaped
    (``evaluate``, ``report``), so ``params.meta.order = 'first'`` finds them.

    Raises :class:`~metafgnet.tracking.uri.TrackingUnavailable` before any work when the
    tracking server does not answer (unless ``tracking.offline``), and
    :class:`~metafgnet.tracking.uri.TrackingError` when the run cannot be recorded.
    """
    tracking = tracking if tracking is not None else params.tracking
    if not tracking.enabled:
        yield StageRun.null(stage)
        return
    child_params = run_tags.stage_params(params, sections)  # bad section names fail first
    if lineage:
        child_params = run_tags.all_params(params)
    root = Path(root).resolve() if root is not None else repo_root()
    target = resolve_target(tracking, root)
    tags = run_tags.provenance_tags(params, data_digest, device)
    if target.intended_uri is not None:  # offline
        tags[run_tags.OFFLINE] = "true"
        tags[run_tags.INTENDED_URI] = redact_text(target.intended_uri)
    log_system = (tracking.system_metrics and is_training_stage(stage)
                  if system_metrics is None else system_metrics)
    spec = StageSpec(target, tracking, str(root),
                     RunSpec(stage, "stage", {**tags, run_tags.STAGE: stage}, child_params,
                             source=run_tags.source_tags()),
                     RunSpec(parent_name(tags), "pipeline", tags, run_tags.all_params(params)),
                     log_system)
    run = StageRun(spec, tracking)
    try:
        yield run
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            run._finish()
        else:
            run._fail(exc)
        raise
    run._finish()
