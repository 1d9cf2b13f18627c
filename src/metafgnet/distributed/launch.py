"""Self-relaunch under torchrun, so ``python pipeline/<stage>.py`` honours ``runtime.nproc``.

DVC runs a stage as one plain ``python`` command. When the params ask for several processes per
node, the stage script calls :func:`relaunch_under_torchrun` first thing: outside torchrun it
replaces itself (``exec``, same pid, so DVC waits on it and gets its exit code) by

    python -m metafgnet.distributed.run --standalone --nproc_per_node <nproc> <script> <args...>

which is torchrun, quiet about ranks stopped on a known problem
(:mod:`metafgnet.distributed.run`). ``--standalone``
runs a local rendezvous on a free port. Inside torchrun (the relaunched workers, or a multi-node
job started by hand) :func:`relaunch_under_torchrun` returns at once and the script carries on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from metafgnet.distributed.context import launched_by_torchrun
from metafgnet.distributed.devices import hold_devices


def torchrun_command(nproc: int, argv: Sequence[str], *, python: str | None = None) -> list[str]:
    """The single-node torchrun command line that runs ``argv`` (script + args) ``nproc`` times."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [python or sys.executable, "-m", "metafgnet.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *argv]


def relaunch_under_torchrun(nproc: int, argv: Sequence[str] | None = None, *,
                            gpus: bool = False) -> None:
    """Re-exec the current script under torchrun when ``nproc > 1`` and not already under it.

    Returns normally (doing nothing) when ``nproc == 1`` or when the torchrun variables are set.
    ``argv`` defaults to ``sys.argv`` (the script path and its arguments). ``gpus``: first lease
    ``nproc`` GPUs (:mod:`metafgnet.distributed.devices`, waiting while they are taken) and
    show the ranks only those (``CUDA_VISIBLE_DEVICES``); the launcher keeps the lease.
    """
    if nproc <= 1 or launched_by_torchrun():
        return
    if gpus:
        lease = hold_devices(nproc)
        lease.inherit()
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(lease.devices)
    cmd = torchrun_command(nproc, list(sys.argv if argv is None else argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
