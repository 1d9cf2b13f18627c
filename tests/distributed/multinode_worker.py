"""A stage-like script for the multi-node tests: starts its processes the way a stage does
(:func:`metafgnet.distributed.relaunch_under_torchrun`), then meta-trains the small BatchNorm
net (second order) data-parallel over every rank of every node.

    python multinode_worker.py OUT_DIR NPROC NNODES LAUNCHER

Every rank saves ``rank<r>.pt``: its final state, the logged rows, and where it ran (torchrun's
and Slurm's variables).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from distributed._helpers import bn_model  # noqa: E402
from distributed.settings import META, SEED, datasets  # noqa: E402
from metafgnet.distributed import distributed, relaunch_under_torchrun  # noqa: E402
from metafgnet.params import MetaParams, RuntimeParams  # noqa: E402
from metafgnet.training import (
    LoopRuntime,
    meta_train,  # noqa: E402
)

PLACE = ("RANK", "LOCAL_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "SLURM_JOB_ID",
         "SLURM_PROCID", "SLURM_STEP_ID")

if __name__ == "__main__":
    out, nproc, nnodes, launcher = (Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                    sys.argv[4])
    relaunch_under_torchrun(nproc, nnodes=nnodes, launcher=launcher)  # no-op inside torchrun
    torch.set_num_threads(1)
    with distributed(RuntimeParams(device="cpu", nproc=nproc, nnodes=nnodes)) as dist:
        target, aux, _ = datasets()
        model = bn_model()
        rows = meta_train(model, target, aux, MetaParams(**META),
                          LoopRuntime(device=torch.device("cpu"), seed=SEED, dist=dist))
        torch.save({"state": model.state_dict(), "rows": rows,
                    "place": {k: os.environ.get(k) for k in PLACE}},
                   out / f"rank{dist.rank}.pt")
