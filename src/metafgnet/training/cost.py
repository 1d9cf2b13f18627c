"""What a training stage cost: time per iteration, throughput and peak memory.

The figures are written beside the stage's metrics (``cost.*``) so that ``dvc exp show`` and the
execution's MLflow parent run put the cost of a switch (``meta.order``) next to its result:

- ``seconds_per_iter`` and ``images_per_s``: medians over the logged windows of the loop (each
  window's mean over its steps), so the first window's warm-up does not dominate;
- ``peak_memory_mib``: on CUDA, ``torch.cuda.max_memory_allocated`` during the stage (reset at
  its start); on CPU, the growth of the process's peak resident set size over its size at the
  start (Linux resets the peak through ``/proc/self/clear_refs``; elsewhere the lifetime peak
  of the process is used, an upper bound). ``memory`` names which one was measured.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _peak_rss_kib() -> int:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Peak memory of the code run inside ``with PeakMemory(device) as mem:``; read ``mem.mib``
    and ``mem.kind`` after the block."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "rss_growth"
        self.mib = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with contextlib.suppress(OSError):  # Linux: resets the peak (VmHWM) to the current size
                Path("/proc/self/clear_refs").write_text("5")
            self._start_kib = _status_kib("VmRSS") or _peak_rss_kib()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mib = max(0, _peak_rss_kib() - self._start_kib) / 1024


def loop_cost(curves: list[dict], memory: PeakMemory) -> dict[str, float | str]:
    """``cost`` entry of a stage's metrics from its logged rows (``seconds_per_step``,
    ``images_per_s`` per window) and its measured peak memory."""
    def median(key: str) -> float:
        values = [float(r[key]) for r in curves if key in r]
        return statistics.median(values) if values else float("nan")

    return {"seconds_per_iter": median("seconds_per_step"), "images_per_s": median("images_per_s"),
            "peak_memory_mib": round(memory.mib, 1), "memory": memory.kind}
