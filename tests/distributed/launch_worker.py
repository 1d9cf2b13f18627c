"""A stage-like script: relaunches itself under torchrun when asked for 2 processes.

    python launch_worker.py OUT_DIR NPROC

Each process writes ``rank<r>.txt`` with its rank, world size and backend.
"""

from __future__ import annotations

import sys
from pathlib import Path

from metafgnet.distributed import distributed, relaunch_under_torchrun
from metafgnet.params import RuntimeParams

if __name__ == "__main__":
    out, nproc = Path(sys.argv[1]), int(sys.argv[2])
    relaunch_under_torchrun(nproc)  # outside torchrun: exec torchrun; inside: no-op
    with distributed(RuntimeParams(device="cpu", nproc=nproc)) as dist:
        (out / f"rank{dist.rank}.txt").write_text(f"{dist.rank} {dist.world_size} {dist.backend}")
        dist.barrier()
