"""Pre-emption: SIGTERM turns into "checkpoint at the next step boundary, then stop".

Schedulers (SLURM, Kubernetes, torchrun's agent when it is itself terminated) send SIGTERM and,
after a grace period, SIGKILL. While a loop with a checkpoint directory runs, SIGTERM only sets
a flag (:class:`StopRequest`); the loop finishes the step it is in, writes a checkpoint
(:mod:`metafgnet.training.checkpointing`) and raises :class:`TrainingInterrupted`, whose
``exit_code`` (143) the stage should exit with. In a process group the flag travels with the
step's all-reduce (:func:`metafgnet.distributed.sync_step`), so a signal to any rank stops
every rank after the same step. The grace period must cover one step plus one checkpoint write.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from metafgnet.errors import Interrupted


class TrainingInterrupted(Interrupted):
    """Training stopped on a signal after writing a checkpoint; rerun the same command.

    ``exit_code`` is 128 + the signal number (143 for SIGTERM), what a stage should exit with.
    """

    def __init__(self, step: int, checkpoint: Path | None, signum: int) -> None:
        self.step, self.checkpoint, self.signum = step, checkpoint, signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        where = (f"checkpoint written to {checkpoint}; rerun the same command to resume"
                 if checkpoint is not None else
                 "no checkpoint_dir was given, so progress is lost")
        super().__init__(f"training stopped by {name} after {step} steps: {where}")


class StopRequest:
    """While entered, SIGTERM sets :attr:`signum` instead of killing the process.

    The loop checks :attr:`requested` at each step boundary, writes a checkpoint and raises
    :class:`TrainingInterrupted`. Installed only when ``enabled`` (a checkpoint directory
    exists: without somewhere to save, SIGTERM keeps its default, immediate effect) and from the
    main thread (the only one that may install handlers); otherwise inert.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.signum: int | None = None
        self._installed, self._previous = False, None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        os.write(2, f"metafgnet: received {signal.Signals(signum).name}; checkpointing at the "
                    "end of this step, then exiting\n".encode())

    def __enter__(self) -> StopRequest:
        self._installed = self.enabled and threading.current_thread() is threading.main_thread()
        if self._installed:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
