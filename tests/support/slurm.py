"""A throw-away one-node Slurm cluster on this machine (Debian's ``slurm-wlm``: ``slurmctld``
and ``slurmd`` started by the test, its own configuration, state and ports, no munge:
``auth/none``), for proving ``srun`` and the environment it sets. The daemons run as root
(``slurmd`` must); :func:`unavailable` says why no cluster can be started here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from support.servers import free_port, stop_group

START_TIMEOUT_S = 60
DAEMONS = ("slurmctld", "slurmd")
CLIENTS = ("salloc", "srun", "sinfo")

CONF = """\
ClusterName=metafgnettest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _find(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).is_file()), None)


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    missing = [n for n in (*DAEMONS, *CLIENTS) if _find(n) is None]
    if missing:
        return f"no Slurm ({', '.join(missing)} missing: apt-get install slurm-wlm)"
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs"
    try:
        socket.gethostbyname(socket.gethostname())
    except OSError:
        return f"this machine's name {socket.gethostname()!r} does not resolve"
    return None


@contextlib.contextmanager
def cluster(root: Path) -> Iterator[dict]:
    """Start ``slurmctld`` and ``slurmd`` for one node (this machine) with their files under
    ``root``; yield the environment that points Slurm's commands at it (``SLURM_CONF``). Raises
    RuntimeError with the daemons' logs when the node is not idle within a minute."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(CONF.format(host=socket.gethostname(), ctld_port=free_port(),
                                d_port=free_port(), root=root, cpus=os.cpu_count() or 1))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for key in [k for k in env if k.startswith(("SLURM_JOB", "SLURM_NODELIST", "SLURM_NNODES"))]:
        del env[key]  # not inside another allocation
    daemons = []
    try:
        for name, args in (("slurmctld", ["-D", "-i"]), ("slurmd", ["-D"])):
            log = open(root / f"{name}.out", "w")  # noqa: SIM115 (closed below)
            daemons.append((subprocess.Popen([_find(name), *args], env=env, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True),
                            log))
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            state = subprocess.run([_find("sinfo"), "-h", "-o", "%t"], env=env,
                                   capture_output=True, text=True, timeout=30).stdout.strip()
            if state == "idle":
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p, _ in daemons):
                logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}"
                                 for p in sorted(root.glob("slurm*.out")) + sorted(
                                     root.glob("slurm*.log")))
                raise RuntimeError(f"the Slurm node is not idle (state {state!r}):\n{logs}")
            time.sleep(0.5)
        yield env
    finally:
        for proc, log in daemons:  # the daemons this function started, by process group
            if proc.poll() is None:
                stop_group(proc)
            log.close()
