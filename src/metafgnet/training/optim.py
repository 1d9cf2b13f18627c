"""The one place that builds SGD parameter groups and their step-decay schedule.

Every stage of docs/method.md trains with SGD (momentum 0.9, weight decay 1e-4) on named
parameter groups with their own learning rates (backbone / target head / source head), all
decayed by the same factor at the same milestones, like ``torch.optim.lr_scheduler.MultiStepLR``.
In the meta stage the inner step size η follows the same factor (docs/method.md, meta-iteration
step 2: "decayed by the outer schedule's factor"), which is why the schedule hands back the
factor rather than owning η.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import torch
from torch import nn


def scaled_schedule(length: int, milestones: list[int], factor: float) -> tuple[int, list[int]]:
    """A step schedule of ``length`` epochs or iterations run ``factor`` times as long (a
    selected subset, a tuning budget): the new length (at least 1) and the milestones scaled
    the same way, kept strictly increasing, at least 1 and below the new length."""
    new = max(1, round(length * factor))
    scaled = {max(1, round(m * factor)) for m in milestones}
    return new, sorted(m for m in scaled if m < new)


def param_groups(model: nn.Module, lrs: dict[str, float]) -> list[dict]:
    """SGD groups ``{"name", "params", "lr", "base_lr"}`` for submodules of ``model``.

    ``lrs`` maps a submodule name of a ``MetaFGNet`` (``backbone``, ``target_head``,
    ``source_head``) to its base learning rate. A group is built from the submodule as it is
    *now*: build the optimizer after ``reset_target_head``.
    """
    groups, seen = [], set()
    for name, lr in lrs.items():
        params = [p for p in getattr(model, name).parameters() if p.requires_grad]
        if any(id(p) in seen for p in params):
            raise ValueError(f"parameter group {name!r} shares parameters with another group")
        seen.update(id(p) for p in params)
        groups.append({"name": name, "params": params, "lr": float(lr), "base_lr": float(lr)})
    return groups


def build_sgd(
    model: nn.Module, lrs: dict[str, float], *, momentum: float, weight_decay: float
) -> torch.optim.SGD:
    """SGD over :func:`param_groups`; weight decay on every parameter, as the authors did."""
    return torch.optim.SGD(param_groups(model, lrs), lr=max(lrs.values()), momentum=momentum,
                           weight_decay=weight_decay)


class StepDecay:
    """MultiStepLR without hidden state: the factor is a pure function of the step index.

    Step ``s`` (0-based: an iteration or an epoch) runs at ``base_lr * decay ** n`` with
    ``n = #{m in milestones : m <= s}``, i.e. the decay applies once ``m`` steps are complete,
    exactly like ``MultiStepLR`` stepped once per step. Being stateless, a resumed run gets the
    same rates from the step counter alone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: Sequence[int], decay: float):
        milestones = list(milestones)
        if milestones != sorted(set(milestones)):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        self.optimizer = optimizer
        self.milestones = milestones
        self.decay = float(decay)

    def apply(self, step: int) -> float:
        """Set every group's lr for ``step``; return the factor (to scale η the same way)."""
        f = self.decay ** bisect.bisect_right(self.milestones, step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * f
        return f

    def lrs(self) -> dict[str, float]:
        """Current lr per named group (for logging)."""
        return {g["name"]: g["lr"] for g in self.optimizer.param_groups}


def set_grads(params: Iterable[tuple[str, nn.Parameter]], grads: dict[str, torch.Tensor]) -> None:
    """Write ``grads[name]`` into ``p.grad`` for each named parameter; zeros where absent.

    Zeros (not ``None``) reproduce the authors' PyTorch-0.3 optimizer, whose ``zero_grad``
    zeroed gradients: a parameter outside the current loss still takes its momentum and
    weight-decay step.
    """
    for name, p in params:
        g = grads.get(name)
        if g is None:
            p.grad = torch.zeros_like(p)
        else:
            p.grad = g.detach().to(dtype=p.dtype).clone()
