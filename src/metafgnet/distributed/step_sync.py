"""What the ranks agree on at the end of every training step, in ONE bucketed all-reduce.

- gradients (meta-gradient, auxiliary gradient, plain-loop gradients): averaged, so every rank
  applies the same update and the parameters stay identical without any further broadcast;
- BatchNorm running statistics: each rank moved them with its own shard's batch statistics
  (per-rank batch statistics in every training pass: SyncBatchNorm has no double backward,
  docs/platform.md); they are then AVERAGED over ranks, so all ranks hold identical buffers and the
  evaluation model is the same everywhere. Running statistics are updated linearly, so
  averaging after every step equals averaging once at the end: the running mean is that of the
  global batch means (equal shards); the running variance is the mean of the per-shard
  variances, which leaves out the spread between shard means (a ghost-batch estimate);
- the logged scalars (losses, accuracies): averaged, so the logged values are global-batch
  means and every rank takes the same non-finite decision (no rank raises while the others
  wait in a collective);
- the stop request (SIGTERM): any rank asking stops every rank after this same step.

Single process: nothing is communicated and the inputs come back unchanged (bit-identical to
the code before distribution existed).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from metafgnet.distributed.context import DistContext


@dataclasses.dataclass
class StepAgreement:
    """The step's values after :func:`sync_step`: identical on every rank."""

    grads: list[dict[str, Tensor]]
    scalars: dict[str, Tensor]
    stop: bool


def sync_step(
    dist: DistContext,
    grads: list[dict[str, Tensor]],
    running_buffers: list[Tensor],
    scalars: dict[str, Tensor],
    stop: bool,
) -> StepAgreement:
    """Average ``grads`` (each a name -> tensor mapping) and ``scalars``; average
    ``running_buffers`` IN PLACE; OR the ``stop`` flags. See the module docstring."""
    if not dist.enabled:
        return StepAgreement(grads, scalars, stop)
    flat: list[Tensor] = [g for mapping in grads for g in mapping.values()] + running_buffers
    device = flat[0].device if flat else torch.device("cpu")
    names = list(scalars)
    # scalars and the stop flag travel as one small float64 vector
    flat.append(torch.stack([*(scalars[n].detach().double().reshape(()).to(device) for n in names),
                             torch.tensor(float(stop), dtype=torch.float64, device=device)]))
    mean = iter(dist.all_reduce_mean(flat))  # in the order of flat
    out_grads = [{name: next(mean) for name in mapping} for mapping in grads]
    with torch.no_grad():
        for buf in running_buffers:
            buf.copy_(next(mean))
    vector = next(mean)
    out_scalars = {n: vector[k].to(scalars[n].dtype if scalars[n].is_floating_point()
                                   else torch.float64) for k, n in enumerate(names)}
    return StepAgreement(out_grads, out_scalars, bool(vector[-1] > 0))
