"""Run under ``torchrun --nproc_per_node 2`` on a machine with >= 2 GPUs (tests/distributed/test_cuda.py).

A short bf16 meta-training over NCCL with pinned-memory loader workers; every rank saves its
final state to ``<out>/nccl-rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from distributed._helpers import KS, KT, images  # noqa: E402
from metafgnet.distributed import init_distributed, teardown  # noqa: E402
from metafgnet.params import MetaParams, RuntimeParams  # noqa: E402
from metafgnet.training import LoopRuntime, make_autocast, meta_train, setup_runtime  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1])
    runtime = RuntimeParams(device="cuda", nproc=2, amp=True, num_threads=1)
    dist = init_distributed(runtime)
    assert dist.backend == "nccl" and dist.device == torch.device("cuda", dist.local_rank)
    device = setup_runtime(runtime, seed=0, dist=dist)
    from metafgnet.models import build_model
    from metafgnet.params import ModelParams

    torch.manual_seed(0)
    model = build_model(ModelParams(width=8), KT, KS).to(device)
    meta = MetaParams(iterations=3, batch_size=8, aux_batch_size=8, log_every=1)
    rows = meta_train(model, images(32, KT, 1, 16, torch.float32),
                      images(32, KS, 2, 16, torch.float32), meta,
                      LoopRuntime(device=device, seed=0,
                                  loader_kwargs={"num_workers": 1, "pin_memory": True,
                                                 "prefetch_factor": 2},
                                  autocast=make_autocast(runtime, device), dist=dist))
    torch.save({"state": {k: v.cpu() for k, v in model.state_dict().items()}, "rows": rows},
               out / f"nccl-rank{dist.rank}.pt")
    teardown()
