"""Progress of a long step (generation, scoring, training, evaluation, tuning trials): a count
against a total, a rate and an ETA.

- On a terminal: one live ``tqdm`` bar on stderr, redrawn in place (left as the step's last
  line when it ends); log lines print above it.
- Elsewhere (DVC's and CI's logs, captured output): no bar and no carriage returns; a plain log
  line with the same fields at most every ``METAFGNET_PROGRESS_EVERY`` seconds (default 30),
  and a last one at the end when any was printed::

      meta_train: 120/300 step (40%), elapsed 00:31, ETA 00:46, 3.87 step/s

``METAFGNET_PROGRESS=off`` silences both. Only the outermost step of a process shows progress
(validation inside a training loop does not open a second bar), and only where ``enabled``
(rank 0 under ``torchrun``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("metafgnet")

LINE_FORMAT = ("{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%), elapsed {elapsed}, "
               "ETA {remaining}, {rate_fmt}")


class Progress:
    """``with Progress("meta_train", total=300, unit="step", initial=start) as bar:
    bar.update()`` once per step (``initial``: steps already done by a resumed run; the rate
    and the ETA count only this process's steps)."""

    _open = 0  # bars open in this process: only the outermost one shows

    def __init__(self, desc: str, total: int, *, unit: str = "it", initial: int = 0,
                 enabled: bool = True) -> None:
        self.desc, self.total, self.unit = desc, int(total), unit
        self.n = self.initial = int(initial)
        self.shown = (enabled and Progress._open == 0
                      and os.environ.get("METAFGNET_PROGRESS", "on") != "off")
        self.live = self.shown and sys.stderr.isatty()
        self.every = (float(os.environ.get("METAFGNET_PROGRESS_EVERY", "30"))  # s between lines
                      if self.shown and not self.live else 0.0)
        self._bar: tqdm | None = None
        self._redirect: contextlib.AbstractContextManager | None = None
        self._lines = 0

    def __enter__(self) -> Progress:
        Progress._open += 1
        self.started = self._last = time.monotonic()
        if self.live:
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()
            self._bar = tqdm(total=self.total, initial=self.initial, desc=self.desc,
                             unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        return self

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.shown and time.monotonic() - self._last >= self.every:
            self._line()

    def _line(self) -> None:
        """Log the plain progress line as it stands now."""
        elapsed = time.monotonic() - self.started
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        log.info("%s", tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc,
                                         unit=self.unit, rate=rate, bar_format=LINE_FORMAT))
        self._lines += 1
        self._last = time.monotonic()

    def __exit__(self, *exc) -> None:
        Progress._open -= 1
        if self._bar is not None:
            self._bar.close()
            assert self._redirect is not None  # entered with the bar
            self._redirect.__exit__(*exc)
        elif self.shown and self._lines and exc[0] is None:
            self._line()
