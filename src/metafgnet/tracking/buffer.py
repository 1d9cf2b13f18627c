"""Batched metric logging: one ``log_batch`` request every few seconds, not one per value.

Values recorded while the stage's run is still being opened (in the background) wait here.

Values are time-stamped when recorded and sent when ``flush_seconds`` have passed since the last
send or ``max_pending`` values are waiting, and at the end of the stage. A send that fails
mid-stage (a server hiccup, after MLflow's own retries) keeps the values and tries again at the
next flush; the final flush of a stage raises, so a lost record never goes unnoticed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from metafgnet.credentials import redact_url
from metafgnet.tracking.uri import TrackingError

log = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0
MAX_PENDING = 1000  # MLflow accepts at most 1000 metrics per batch
MAX_BACKLOG = 200_000  # values kept while the server is away before the stage fails


class MetricBuffer:
    """Values waiting for ``sink.log_metrics([(key, value, timestamp_ms, step), ...])`` (a
    :class:`~metafgnet.tracking.recorder.Recorder`, here or in the tracking agent)."""

    def __init__(self, uri: str, flush_seconds: float = FLUSH_SECONDS,
                 max_pending: int = MAX_PENDING):
        self._sink = None
        self._run_id: str | None = None
        self._uri = uri
        self._flush_seconds = flush_seconds
        self._max_pending = max_pending
        self._pending: list = []
        self._last_flush = time.monotonic()
        self._failing = False
        self.requests = 0  # log_batch calls made, for overhead checks

    def attach(self, sink, run_id: str) -> None:
        """Start sending to ``sink`` (the recorder of run ``run_id``); values recorded before
        are kept and sent later."""
        self._run_id = run_id
        self._sink = sink

    def add(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record ``metrics`` at ``step`` (``float()`` is applied: tensors, numpy scalars)."""
        now_ms = int(time.time() * 1000)
        step = 0 if step is None else int(step)
        self._pending.extend((str(k), float(v), now_ms, step) for k, v in metrics.items())
        if self._sink is None:  # the run is still being opened
            return
        if (len(self._pending) >= self._max_pending
                or time.monotonic() - self._last_flush >= self._flush_seconds):
            self.flush(final=False)

    def flush(self, final: bool = True) -> None:
        """Send waiting values; with ``final`` a failure raises :class:`TrackingError`."""
        if self._sink is None:
            if final and self._pending:
                raise TrackingError(f"{len(self._pending)} metric values but no run to send to")
            return
        self._last_flush = time.monotonic()
        while self._pending:
            batch = self._pending[: self._max_pending]
            try:
                self._sink.log_metrics(batch)
            except Exception as exc:  # the MLflow client raises several types
                self._on_failure(exc, final)
                return
            self.requests += 1
            del self._pending[: len(batch)]
        if self._failing:
            log.warning("metric logging to %s recovered", redact_url(self._uri))
            self._failing = False

    def _on_failure(self, exc: Exception, final: bool) -> None:
        message = (f"could not log {len(self._pending)} metric values of run {self._run_id} "
                   f"to {redact_url(self._uri)}: {exc}")
        if final or len(self._pending) > MAX_BACKLOG:
            raise TrackingError(message) from exc
        if not self._failing:
            log.warning("%s; keeping them and retrying at the next flush", message)
            self._failing = True

