"""Run under ``torchrun --nproc_per_node 2`` by tests/distributed/test_distributed.py (gloo, CPU).

Every check the test makes of a real process group is computed here in ONE launch (torchrun
start-up dominates the cost) and saved by rank 0 (or by every rank, ``*-rank<r>.pt``) under
the output folder given as the only argument.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from distributed._helpers import KS, KT, bn_model, images, plain_model  # noqa: E402
from distributed.settings import (  # noqa: E402
    ETA,
    GRAD_SEED,
    META,
    PLAIN_OPTIM,
    SEED,
    datasets,
)
from metafgnet.distributed import (  # noqa: E402
    init_distributed,
    sharded_evaluate,
    sharded_score_auxiliary,
    teardown,
)
from metafgnet.meta import meta_gradients  # noqa: E402
from metafgnet.params import MetaParams, OptimParams, RuntimeParams  # noqa: E402
from metafgnet.training import LoopRuntime, TrainingInterrupted, finetune, meta_train  # noqa: E402
from metafgnet.training.batches import (  # noqa: E402
    BatchStream,
    EpochPlan,
    ShardedBatchSampler,
    pair_stream,
)

CPU = torch.device("cpu")


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist = init_distributed(RuntimeParams(device="cpu", nproc=2))
    assert dist.enabled and dist.backend == "gloo", dist
    r = dist.rank

    def save(name: str, obj, every_rank: bool = False) -> None:
        if every_rank:
            torch.save(obj, out / f"{name}-rank{r}.pt")
        elif dist.is_main:
            torch.save(obj, out / f"{name}.pt")

    tds, ads, vds = datasets()
    meta = MetaParams(**META)

    # 1. the shards: each rank's items of the first global batches
    plan = EpochPlan(len(tds), 2 * meta.batch_size, seed=7)
    sampler = ShardedBatchSampler(plan, segments=[meta.batch_size] * 2, rank=r, world_size=2)
    save("shards", list(itertools.islice(iter(sampler), 3)), every_rank=True)

    # 2. one averaged meta-gradient, with and without BatchNorm, from the real data path
    for name, build in (("bn", bn_model), ("plain", plain_model)):
        model = build()
        stream = BatchStream(tds, 2 * meta.batch_size, seed=GRAD_SEED,
                             segments=[meta.batch_size] * 2, rank=r, world_size=2)
        t_i, t_j = next(pair_stream(stream, meta.batch_size // 2))
        for suffix, micro_batch in (("", 0), ("-micro", 1)):  # micro-batches of this shard
            local = meta_gradients(model.target_net(), t_i, t_j, ETA, order="second",
                                   reduce=dist.all_reduce_mean, micro_batch=micro_batch)
            mean = dict(zip(local, dist.all_reduce_mean(list(local.values())), strict=True))
            save(f"grad-{name}{suffix}", mean)

    # 3. short meta-trainings: without BN (vs one process), with BN (vs the emulated ranks)
    for name, build in (("plain", plain_model), ("bn", bn_model)):
        model = build()
        rows = meta_train(model, tds, ads, meta, LoopRuntime(device=CPU, seed=SEED, dist=dist))
        save(f"meta-{name}", {"state": model.state_dict(), "rows": rows}, every_rank=True)

    # 4. SIGTERM to rank 0 after step 1: every rank stops after step 2, then a rerun resumes
    ckpt = out / "ckpt"

    def kill_after_step_1(step, row):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    model = bn_model()
    try:
        meta_train(model, tds, ads, meta,
                   LoopRuntime(device=CPU, seed=SEED, dist=dist, checkpoint_dir=ckpt),
                   on_step=kill_after_step_1)
        stopped = None
    except TrainingInterrupted as exc:
        stopped = exc.step
    model = bn_model()
    rows = meta_train(model, tds, ads, meta,
                      LoopRuntime(device=CPU, seed=SEED, dist=dist, checkpoint_dir=ckpt))
    save("resumed", {"stopped_at": stopped, "state": model.state_dict(), "rows": rows},
         every_rank=True)

    # 5. plain loop (fine-tuning with sharded validation), no BN
    model = plain_model()
    fit = finetune(model, tds, vds, OptimParams(**PLAIN_OPTIM),
                   LoopRuntime(device=CPU, seed=SEED, dist=dist))
    save("finetune", {"state": model.state_dict(), "curves": fit.curves,
                      "best_epoch": fit.best_epoch})

    # 6. sharded inference over a size that does not split evenly (11 = 6 + 5)
    model = bn_model()
    odd = images(11, KT, 9)
    ev = sharded_evaluate(model, odd, dist=dist, device=CPU, batch_size=4)
    scores = sharded_score_auxiliary(model, images(11, KS, 10), dist=dist, device=CPU,
                                     batch_size=4)
    save("inference", {"evaluate": ev, "scores": scores})
    dist.barrier()
    teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
