"""Batched metric logging: one ``log_batch`` request every few seconds, not one per value.

Values recorded while the stage's run is still being opened (in the background) wait here.

Values are time-stamped when recorded and sent when :data:`FLUSH_SECONDS` have passed since the
last send or :data:`MAX_PENDING` values are waiting, and at the end of the stage.

A tracking server may restart while a stage runs; nothing is lost. A send that fails mid-stage
(after MLflow's own retries) moves the values to a spool file on disk (``metric-spool/`` in the
user runtime folder, one file per run, at most :data:`MAX_BACKLOG` values: beyond, the stage
fails naming the file) and the stage goes on. Every later flush first sends the spooled values,
oldest first, with their original steps and timestamps, so once the server answers again the
run's metric history is the one it would have had without the outage. The final flush, at the
end of a stage, waits for a server that does not answer, up to :data:`FINAL_WAIT_S` with growing
pauses (a restart, an outage at the stage's last step), then raises while values are still
unsent, naming the file that holds them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from metafgnet.credentials import redact_text
from metafgnet.io import user_runtime_dir
from metafgnet.tracking.uri import AgentLost, TrackingError

log = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0
MAX_PENDING = 1000  # MLflow accepts at most 1000 metrics per batch
MAX_BACKLOG = 200_000  # values spooled while the server is away before the stage fails
FINAL_WAIT_S = 300.0  # how long the end of a stage waits for the server to answer again


def until_answered(call: Callable[[], object], uri: str, deadline: float) -> None:
    """``call()``, and again with growing pauses while it raises and ``time.monotonic()`` is
    before ``deadline``: how the end of a stage waits for a tracking server that does not answer
    (a restart). A lost agent (:class:`AgentLost`) is not waited for; the last error is raised."""
    pause = 1.0
    while True:
        try:
            call()
            return
        except AgentLost:
            raise
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise
            if pause == 1.0:
                log.warning("the stage has ended; waiting up to %.0f s for %s to answer (%s)",
                            deadline - time.monotonic(), redact_text(uri), redact_text(str(exc)))
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(2 * pause, 15.0)


class MetricBuffer:
    """Values waiting for ``sink.log_metrics([(key, value, timestamp_ms, step), ...])`` (a
    :class:`~metafgnet.tracking.recorder.Recorder`, here or in the tracking agent)."""

    def __init__(self, uri: str):
        self._sink = None
        self._run_id: str | None = None
        self._uri = uri
        self._pending: list = []
        self._spool: Path | None = None  # the file of values a failed send left, if any
        self._spooled = 0
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
        if (len(self._pending) >= MAX_PENDING
                or time.monotonic() - self._last_flush >= FLUSH_SECONDS):
            self.flush(final=False)

    def flush(self, final: bool = True) -> None:
        """Send spooled values, then waiting ones. With ``final`` a server that does not answer
        is waited for (:func:`until_answered`), then :class:`TrackingError` is raised."""
        if self._sink is None:
            if final and self._pending:
                raise TrackingError(f"{len(self._pending)} metric values but no run to send to")
            return

        def attempt() -> None:
            """Spooled values, then waiting ones; a failed send leaves all of them on disk, in
            order, and raises."""
            self._last_flush = time.monotonic()
            try:
                if self._spooled:
                    values = self._read_spool()
                    try:
                        self._send(values)
                    finally:  # what the server took leaves the file, the rest stays in order
                        self._rewrite_spool(values)
                self._send(self._pending)
            except Exception as exc:  # the MLflow client raises several types
                self._keep(exc)
                raise

        try:
            until_answered(attempt, self._uri, time.monotonic() + (FINAL_WAIT_S if final else 0))
        except Exception as exc:
            self._give_up(exc, final)
            return
        if self._failing:
            log.warning("metric logging to %s recovered: every value was sent",
                        redact_text(self._uri))
            self._failing = False

    def _send(self, values: list) -> None:
        """Send ``values`` in batches, each removed from the list once the server took it."""
        while values:
            batch = values[:MAX_PENDING]
            self._sink.log_metrics(batch)
            self.requests += 1
            del values[: len(batch)]

    def _read_spool(self) -> list:
        with self._spool.open() as fh:
            return [tuple(json.loads(line)) for line in fh if line.strip()]

    def _rewrite_spool(self, values: list) -> None:
        if values:
            tmp = self._spool.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(list(v)) + "\n" for v in values))
            os.replace(tmp, self._spool)
        else:
            self._spool.unlink(missing_ok=True)
        self._spooled = len(values)

    def _write_spool(self, values: list) -> None:
        """Append ``values`` to the spool file (each value on disk when this returns)."""
        if self._spool is None:
            key = hashlib.sha256(f"{self._uri}\n{self._run_id}".encode()).hexdigest()[:16]
            self._spool = user_runtime_dir() / "metric-spool" / f"{self._run_id}-{key}.jsonl"
            self._spool.parent.mkdir(parents=True, exist_ok=True)
        with self._spool.open("a") as fh:
            fh.writelines(json.dumps(list(v)) + "\n" for v in values)
            fh.flush()
            os.fsync(fh.fileno())
        self._spooled += len(values)

    def _message(self, exc: Exception) -> str:
        return (f"could not log {self._spooled + len(self._pending)} metric values of run "
                f"{self._run_id} to {redact_text(self._uri)}: {exc}")

    def _keep(self, exc: Exception) -> None:
        """After a failed send: the waiting values go to the spool file, said once."""
        self._write_spool(self._pending)
        self._pending.clear()
        if not self._failing:
            log.warning("%s; keeping them on disk in %s and sending them when the server "
                        "answers again", self._message(exc), self._spool)
            self._failing = True

    def _give_up(self, exc: Exception, final: bool) -> None:
        """After the last attempt of a flush failed: a backlog beyond :data:`MAX_BACKLOG`, or
        the end of the stage, raises :class:`TrackingError` naming the spool file."""
        if self._spooled > MAX_BACKLOG:
            raise TrackingError(f"{self._message(exc)}\nMore than {MAX_BACKLOG} values waited "
                                f"for the server; they are in {self._spool}") from exc
        if final:
            raise TrackingError(f"{self._message(exc)}\nThey are kept in {self._spool} (one "
                                "JSON [key, value, timestamp_ms, step] per line).") from exc
