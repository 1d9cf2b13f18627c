"""Which pipeline execution a stage process belongs to, and the code it runs.

One ``dvc repro`` or ``dvc exp run`` starts every stage as a separate process. They share one
MLflow parent run, found through an *execution id* (rule, first match wins):

1. ``METAFGNET_EXECUTION_ID`` when set (use it to group processes yourself, e.g. on another OS
   or under a scheduler);
2. the nearest ancestor process that is DVC (``dvc repro``, ``dvc exp run``, or the
   ``dvc exp exec-run`` that runs each queued experiment): a digest of host, boot id, its pid
   and its start time from ``/proc``, so the id is unique even after pids are reused;
3. this process itself (a stage run by hand is its own execution).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

from metafgnet.provenance import git_output

EXECUTION_ENV = "METAFGNET_EXECUTION_ID"
_DVC_NAMES = {"dvc", "dvc.exe"}


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks since boot) of ``pid``; None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and ')'
    return int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_dvc_command(argv: list[str]) -> bool:
    """True for ``dvc ...``, ``python .../bin/dvc ...`` and ``python -m dvc ...``."""
    return (any(Path(arg).name in _DVC_NAMES for arg in argv[:2])
            or argv[1:3] == ["-m", "dvc"])


def dvc_ancestor() -> int | None:
    """Pid of the nearest DVC process above this one, else None."""
    stat = _proc_stat(os.getpid())
    seen = 0
    while stat is not None and stat[0] > 1 and seen < 64:
        parent = stat[0]
        if is_dvc_command(_cmdline(parent)):
            return parent
        stat = _proc_stat(parent)
        seen += 1
    return None


def execution_id() -> str:
    """The id shared by all stage processes of one pipeline execution (module docstring)."""
    if explicit := os.environ.get(EXECUTION_ENV, "").strip():
        return explicit
    pid = dvc_ancestor() or os.getpid()
    stat = _proc_stat(pid)
    if stat is None:  # no /proc: every process is its own execution
        key = f"{socket.gethostname()}:{pid}:{time.time_ns()}"
    else:
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot = ""
        key = f"{socket.gethostname()}:{boot}:{pid}:{stat[1]}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def params_overrides() -> dict[str, str]:
    """What ``params.yaml`` (of the current directory) changes against the baseline, dotted.

    The baseline is ``DVC_EXP_BASELINE_REV`` in a DVC experiment, else ``HEAD``: after
    ``dvc exp run -S meta.order=first`` this is ``{"meta.order": "first"}``. Empty when the
    params equal the committed ones, or outside git.
    """
    from metafgnet.io import parse_yaml_text, read_yaml
    from metafgnet.params import flatten

    rev = os.environ.get("DVC_EXP_BASELINE_REV") or "HEAD"
    committed = git_output("show", f"{rev}:params.yaml")
    path = Path("params.yaml")
    if committed is None or not path.is_file():
        return {}
    base, now = parse_yaml_text(committed), read_yaml(path)
    if not isinstance(base, dict) or not isinstance(now, dict):
        return {}
    base, now = flatten(base), flatten(now)
    return {k: str(v) for k, v in now.items() if k not in base or base[k] != v}
