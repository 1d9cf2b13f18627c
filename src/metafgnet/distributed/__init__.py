"""Data-parallel training and inference on ``torch.distributed``, launched with ``torchrun``.

- :mod:`~metafgnet.distributed.context`: the process group (:class:`DistContext`, the no-op
  :data:`SINGLE`, :func:`init_distributed` / :func:`teardown`);
- :mod:`~metafgnet.distributed.sharding`: which slice of a global batch / dataset a rank takes;
- :mod:`~metafgnet.distributed.step_sync`: the one all-reduce per training step (gradients,
  BatchNorm running statistics, logged scalars, the stop flag);
- :mod:`~metafgnet.distributed.inference`: sharded evaluation and selection scoring;
- :mod:`~metafgnet.distributed.launch`: a stage re-executing itself under torchrun.

The meta-gradient is data-parallel without DDP (no double backward support, pytorch#63929):
:func:`metafgnet.meta.meta_gradients` takes ``reduce=dist.all_reduce_mean`` and averages the
inner gradient and ``G`` inside, so all ranks take the global batch's inner step.
"""

from metafgnet.distributed.context import (
    SINGLE,
    DistContext,
    distributed,
    init_distributed,
    teardown,
)
from metafgnet.distributed.inference import sharded_evaluate, sharded_score_auxiliary
from metafgnet.distributed.launch import relaunch_under_torchrun, torchrun_command
from metafgnet.distributed.sharding import check_divisible, shard_segments
from metafgnet.distributed.step_sync import sync_step

__all__ = [
    "SINGLE",
    "DistContext",
    "check_divisible",
    "distributed",
    "init_distributed",
    "relaunch_under_torchrun",
    "shard_segments",
    "sharded_evaluate",
    "sharded_score_auxiliary",
    "sync_step",
    "teardown",
    "torchrun_command",
]
