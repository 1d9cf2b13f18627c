"""How a stage starts its ``runtime.nnodes`` x ``runtime.nproc`` processes, so that
``python pipeline/<stage>.py`` (what ``dvc repro`` / ``dvc exp run`` run) honours them.

The stage script calls :func:`relaunch_under_torchrun` first thing. Inside torchrun (the
relaunched workers, or agents started by hand) it returns at once and the script carries on.
Outside, it replaces itself (``exec``, same pid, so DVC waits on it and gets its exit code) by
the launcher ``execution.launcher`` names:

- ``torchrun``, one node: :func:`torchrun_command`,
  ``python -m metafgnet.distributed.run --standalone --nproc_per_node <nproc> <script> <args>``
  (torchrun, quiet about ranks stopped on a known problem, :mod:`metafgnet.distributed.run`;
  ``--standalone`` runs a local rendezvous on a free port). Several nodes without a scheduler:
  the same script is started by hand on every node with :func:`node_command` (one torchrun
  agent per node, all meeting at a c10d rendezvous on the head node), then ``dvc commit`` on
  the head node; a plain start with ``runtime.nnodes > 1`` says so and stops;
- ``slurm``: :func:`slurm_command`, ``srun`` inside the job's allocation starting one torchrun
  agent per node (:func:`node_command`), the rendezvous on the allocation's first node at
  :func:`rendezvous_port`. ``dvc repro`` runs on the head node inside ``salloc`` / ``sbatch``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence

from metafgnet.distributed.context import launched_by_torchrun
from metafgnet.distributed.devices import hold_devices
from metafgnet.errors import UserError


def torchrun_command(nproc: int, argv: Sequence[str], *, python: str | None = None) -> list[str]:
    """The single-node torchrun command line that runs ``argv`` (script + args) ``nproc`` times."""
    return [python or sys.executable, "-m", "metafgnet.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *argv]


class LaunchError(RuntimeError, UserError):
    """The stage cannot start the processes its params ask for here; the message says why."""


def node_command(argv: Sequence[str], *, nproc: int, nnodes: int, endpoint: str, rdzv_id: str,
                 python: str | None = None) -> list[str]:
    """The torchrun agent of ONE node of an ``nnodes``-node job (every node runs the same
    command): ``nproc`` processes here, all nodes meeting at the c10d rendezvous ``endpoint``
    (``host:port`` of the head node) under the job id ``rdzv_id``."""
    return [python or sys.executable, "-m", "metafgnet.distributed.run", f"--nnodes={nnodes}",
            f"--nproc_per_node={nproc}", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
            f"--rdzv_id={rdzv_id}", *argv]


def first_node(nodelist: str) -> str:
    """The first host of a Slurm node list (``SLURM_JOB_NODELIST``: ``gpu[03-05,9],cpu1`` gives
    ``gpu03``; zero padding kept)."""
    head = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not head or not head.group(1):
        raise LaunchError(f"SLURM_JOB_NODELIST {nodelist!r} names no node")
    prefix, ranges = head.group(1), head.group(2)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def rendezvous_port(job_id: str) -> int:
    """The rendezvous port of a Slurm job: derived from its id, so two jobs whose first node is
    the same machine do not collide (in 20000..39999)."""
    return 20000 + int(job_id) % 20000


def slurm_command(argv: Sequence[str], *, nproc: int, nnodes: int,
                  env: Mapping[str, str] | None = None, python: str | None = None) -> list[str]:
    """``srun`` starting one torchrun agent (:func:`node_command`) on each of the ``nnodes``
    nodes of the current allocation (``SLURM_JOB_ID``, ``SLURM_JOB_NODELIST``,
    ``SLURM_JOB_NUM_NODES`` of ``env``, default the process environment)."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job:
        raise LaunchError("execution.launcher is slurm but this is not a Slurm job "
                          "(SLURM_JOB_ID is unset): run `dvc repro` inside an allocation "
                          f"(salloc -N {nnodes} ... or an sbatch script), or set "
                          "execution.launcher: torchrun")
    allocated = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 0)
    if allocated != nnodes:
        raise LaunchError(f"runtime.nnodes is {nnodes} but Slurm job {job} has {allocated} "
                          f"node(s): allocate {nnodes} (salloc -N {nnodes}) or set "
                          f"runtime.nnodes: {allocated}")
    endpoint = f"{first_node(env['SLURM_JOB_NODELIST'])}:{rendezvous_port(job)}"
    return ["srun", f"--nodes={nnodes}", f"--ntasks={nnodes}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1",
            *node_command(argv, nproc=nproc, nnodes=nnodes, endpoint=endpoint,
                          rdzv_id=f"slurm-{job}", python=python)]


def launch_command(nproc: int, argv: Sequence[str], *, nnodes: int = 1,
                   launcher: str = "torchrun", env: Mapping[str, str] | None = None,
                   python: str | None = None) -> list[str] | None:
    """The command a plain start of the stage ``argv`` re-executes as (module docstring), or
    None when this one process is the whole job."""
    if nproc * nnodes == 1:
        return None
    if launcher == "slurm":
        return slurm_command(argv, nproc=nproc, nnodes=nnodes, env=env, python=python)
    if nnodes > 1:
        cmd = node_command(argv, nproc=nproc, nnodes=nnodes, endpoint="<head node>:29500",
                           rdzv_id="<job id>", python="python")
        raise LaunchError(f"runtime.nnodes is {nnodes}: without a scheduler, start the stage on "
                          f"every node with `{shlex.join(cmd)}` (the same on each node, the head "
                          "node's address), then `dvc commit` on the head node; or run it under "
                          "Slurm with execution.launcher: slurm")
    return torchrun_command(nproc, argv, python=python)


def relaunch_under_torchrun(nproc: int, argv: Sequence[str] | None = None, *,
                            gpus: bool = False, nnodes: int = 1,
                            launcher: str = "torchrun") -> None:
    """Re-exec the current script under its launcher (:func:`launch_command`) unless this
    process is the whole job or already under torchrun (the torchrun variables are set).

    ``argv`` defaults to ``sys.argv`` (the script path and its arguments). ``gpus`` (one-node
    torchrun only; Slurm places its own GPUs): first lease ``nproc`` GPUs
    (:mod:`metafgnet.distributed.devices`, waiting while they are taken) and show the ranks
    only those (``CUDA_VISIBLE_DEVICES``); the launcher keeps the lease.
    """
    if launched_by_torchrun():
        return
    cmd = launch_command(nproc, list(sys.argv if argv is None else argv), nnodes=nnodes,
                         launcher=launcher)
    if cmd is None:
        return
    if gpus and launcher == "torchrun":
        lease = hold_devices(nproc)
        lease.inherit()
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(lease.devices)
    sys.stdout.flush()
    sys.stderr.flush()
    if launcher == "slurm":
        exe = shutil.which(cmd[0])
        if exe is None:
            raise LaunchError("execution.launcher is slurm but `srun` is not on PATH")
        cmd = [exe, *cmd[1:]]
    os.execv(cmd[0], cmd)
