"""Plain (non-meta) training stages (docs/method.md): source pretraining, fine-tuning, joint
baseline.

All three share one epoch loop (:func:`_fit`) and one optimizer/schedule construction
(:mod:`metafgnet.training.optim`): SGD with momentum and weight decay, a learning rate per
parameter group, every group decayed by ``lr_decay`` at the epoch ``milestones``. They differ
only in which groups train and in the loss of a batch:

- :func:`pretrain` (stage 1): backbone + source head, cross-entropy on the auxiliary set;
- :func:`finetune` (stage 5): FRESH target head + backbone, cross-entropy on the target set,
  the best epoch chosen on a validation split (the test split is never seen here);
- :func:`joint_train` (multi-task baseline): fresh target head, target cross-entropy +
  ``aux_weight`` x auxiliary cross-entropy through the source head, no meta-learning.

Epochs are 0-based: epoch ``e`` trains at ``lr * lr_decay ** #{m in milestones : m <= e}``.
Every row of ``curves`` holds epoch MEANS over its steps (losses, ``train_acc``) and the lrs
the epoch ran at; with a validation set also ``val_top1`` / ``val_mean_class_acc``.

How a loop runs (device, seed, loaders, precision, process group, checkpoints, memory layout)
is one :class:`~metafgnet.training.runtime.LoopRuntime`. Scale and resilience, shared by the
three through :func:`_fit`: with ``loop.dist`` (torchrun) each rank trains on its slice of every
global batch (``batch_size`` is global, divisible by the world size), gradients, BatchNorm
running statistics and the logged values are averaged in one all-reduce per step
(:func:`metafgnet.distributed.sync_step`; no DDP needed without double backward), and
validation is sharded and gathered (:func:`metafgnet.distributed.sharded_evaluate`), so every
rank picks the same best epoch. With ``loop.checkpoint_dir`` the loop resumes from its last good
checkpoint, saves every ``loop.checkpoint_every`` steps (a step = one batch; a checkpoint that
falls on an epoch's last batch is written after that epoch's validation) and on SIGTERM
(:mod:`metafgnet.training.checkpointing`).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from metafgnet.distributed import sharded_evaluate, sync_step
from metafgnet.distributed.collectives import float_buffers
from metafgnet.evaluation import evaluate
from metafgnet.params import JointParams, OptimParams, to_dict
from metafgnet.training.batches import Batch, BatchStream, to_device
from metafgnet.training.checkpointing import LoopState
from metafgnet.training.monitor import fetch_finite
from metafgnet.training.optim import StepDecay, build_sgd
from metafgnet.training.runtime import LoopRuntime, derive_seed, seed_everything

# A batch -> (loss to minimise, named 0-d values to log, images in the batch)
LossFn = Callable[[object], tuple[torch.Tensor, dict[str, torch.Tensor], int]]
EpochCallback = Callable[[int, dict], None]
# global step -> every remaining batch of the run, across epochs: ONE loader, so its workers
# (``execution.num_workers``) persist from epoch to epoch instead of restarting at each
BatchesFrom = Callable[[int], Iterable]


@dataclasses.dataclass
class FitResult:
    """Outcome of :func:`finetune` / :func:`joint_train`.

    ``best_state`` is a CPU copy of the state dict at ``best_epoch`` (0-based), the epoch with
    the highest validation top-1 (the earliest on ties); without a validation set it is the
    last epoch and ``best_val_top1`` is None.
    """

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_top1: float | None
    curves: list[dict]


# what a checkpoint keeps of the best epoch so far
_best = operator.attrgetter("best_state", "best_epoch", "best_val_top1")


def pretrain(model: nn.Module, aux_ds: Dataset, optim: OptimParams, loop: LoopRuntime, *,
             on_epoch: EpochCallback | None = None) -> list[dict]:
    """docs/method.md, stage 1: train backbone (``backbone_lr``) + source head (``head_lr``) in
    place."""
    seed_everything(loop.seed)
    model.to(loop.device)
    net = model.source_net()
    stream = _stream(aux_ds, optim.batch_size, derive_seed(loop.seed, "aux"), loop)
    return _fit(model, {"backbone": optim.backbone_lr, "source_head": optim.head_lr}, optim,
                lambda step: stream.loader(step, optim.epochs * stream.batches_per_epoch),
                stream.batches_per_epoch, _ce_loss(net, loop), loop=loop,
                config={"loop": "pretrain", "seed": loop.seed, "items": len(aux_ds)},
                on_epoch=on_epoch).curves


def finetune(model: nn.Module, train_ds: Dataset, val_ds: Dataset, optim: OptimParams,
             loop: LoopRuntime, *, on_epoch: EpochCallback | None = None,
             restore_best: bool = True) -> FitResult:
    """docs/method.md, stage 5: fresh target head (``head_lr``) + backbone (``backbone_lr``).

    The target head is re-initialised (seeded) first; the source head is not trained. The
    validation set picks the best epoch; with ``restore_best`` the model ends at that state.
    """
    seed_everything(loop.seed)
    model.to(loop.device)
    model.reset_target_head()  # fresh head, initialised from the seeded global RNG
    net = model.target_net()
    stream = _stream(train_ds, optim.batch_size, derive_seed(loop.seed, "target"), loop)
    return _fit(model, {"backbone": optim.backbone_lr, "target_head": optim.head_lr}, optim,
                lambda step: stream.loader(step, optim.epochs * stream.batches_per_epoch),
                stream.batches_per_epoch, _ce_loss(net, loop), loop=loop,
                config={"loop": "finetune", "seed": loop.seed, "items": len(train_ds),
                        "val_items": len(val_ds)},
                val_ds=val_ds, on_epoch=on_epoch, restore_best=restore_best)


def joint_train(model: nn.Module, target_ds: Dataset, aux_ds: Dataset, joint: JointParams,
                loop: LoopRuntime, *, val_ds: Dataset | None = None,
                on_epoch: EpochCallback | None = None, restore_best: bool = True) -> FitResult:
    """Multi-task baseline: ``L(T; θ_b, θ_c^t) + aux_weight · L(S; θ_b, θ_c^s)`` per step.

    Fresh (seeded) target head at ``head_lr``; backbone and the pretrained source head at
    ``backbone_lr``. An epoch is one pass over the target set, each target batch paired with
    the next batch of an endless auxiliary stream of the same size (auxiliary batch number =
    global step).
    """
    seed_everything(loop.seed)
    model.to(loop.device)
    model.reset_target_head()
    target_net, source_net = model.target_net(), model.source_net()
    target_stream = _stream(target_ds, joint.batch_size, derive_seed(loop.seed, "target"), loop)
    aux_stream = _stream(aux_ds, joint.batch_size, derive_seed(loop.seed, "aux"), loop)

    def loss_fn(pair: tuple[Batch, Batch]):
        (xt, yt), (xs, ys) = (to_device(b, loop.device, channels_last=loop.channels_last)
                              for b in pair)
        with loop.autocast():
            logits = target_net(xt)  # (B, Kt)
            target_loss = F.cross_entropy(logits, yt)
            aux_loss = F.cross_entropy(source_net(xs), ys)
        loss = target_loss + joint.aux_weight * aux_loss
        acc = (logits.argmax(dim=1) == yt).float().mean()
        terms = {"target_loss": target_loss, "aux_loss": aux_loss, "loss": loss, "train_acc": acc}
        return loss, terms, xt.shape[0] + xs.shape[0]

    lrs = {"backbone": joint.backbone_lr, "target_head": joint.head_lr,
           "source_head": joint.backbone_lr}
    end = joint.epochs * target_stream.batches_per_epoch
    return _fit(model, lrs, joint,
                lambda step: zip(target_stream.loader(step, end), aux_stream.endless(step),
                                 strict=False),
                target_stream.batches_per_epoch, loss_fn, loop=loop,
                config={"loop": "joint_train", "seed": loop.seed, "items": len(target_ds),
                        "aux_items": len(aux_ds),
                        "val_items": None if val_ds is None else len(val_ds)},
                val_ds=val_ds, on_epoch=on_epoch, restore_best=restore_best)


def _stream(ds: Dataset, batch_size: int, seed: int, loop: LoopRuntime) -> BatchStream:
    return BatchStream(ds, batch_size, seed=seed, rank=loop.dist.rank,
                       world_size=loop.dist.world_size, loader_kwargs=loop.loader_kwargs)


def _ce_loss(net: nn.Module, loop: LoopRuntime) -> LossFn:
    """Cross-entropy of ``net`` on one ``(x, y)`` batch, with its train accuracy."""

    def loss_fn(batch: Batch):
        x, y = to_device(batch, loop.device, channels_last=loop.channels_last)  # (B,C,H,W), (B,)
        with loop.autocast():
            logits = net(x)  # (B, K)
            loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return loss, {"loss": loss, "train_acc": acc}, x.shape[0]

    return loss_fn


def _validate(model: nn.Module, val_ds: Dataset, loop: LoopRuntime, batch_size: int) -> dict:
    if not loop.dist.enabled:
        return evaluate(model, val_ds, device=loop.device, batch_size=batch_size,
                        loader_kwargs=loop.loader_kwargs)
    return sharded_evaluate(model, val_ds, dist=loop.dist, device=loop.device,
                            batch_size=batch_size, loader_kwargs=loop.loader_kwargs)


def _fit(
    model: nn.Module, lrs: dict[str, float], optim: OptimParams, batches_from: BatchesFrom,
    steps_per_epoch: int, loss_fn: LossFn, *, loop: LoopRuntime, config: dict,
    val_ds: Dataset | None = None, on_epoch: EpochCallback | None = None,
    restore_best: bool = False,
) -> FitResult:
    """The shared epoch loop: schedule, train steps, validation, best-state bookkeeping,
    step synchronisation across ranks and checkpoints (module docstring)."""
    dist = loop.dist
    optimizer = build_sgd(model, lrs, momentum=optim.momentum, weight_decay=optim.weight_decay)
    schedule = StepDecay(optimizer, optim.milestones, optim.lr_decay)
    state = LoopState(loop, model, optimizer, {**config, "optim": to_dict(optim), "lrs": lrs})
    resumed = state.restore()
    best = FitResult(*(({}, -1, None) if resumed is None else resumed["best"]),
                     curves=state.curves)
    step, window = state.step, state.window  # the one step counter, across epochs
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    running = float_buffers(model) if dist.enabled else []
    batches = iter(batches_from(step))
    with state.running(optim.epochs * steps_per_epoch) as bar:
        for epoch in range(step // steps_per_epoch, optim.epochs):
            schedule.apply(epoch)
            model.train()
            position = step - epoch * steps_per_epoch
            if position == 0:
                window.reset()
            stopping = False
            for batch in itertools.islice(batches, steps_per_epoch - position):
                loss, terms, images = loss_fn(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grads = {n: p.grad for n, p in params.items() if p.grad is not None}
                agreed = sync_step(dist, [grads], running, terms, state.stop.requested)
                values = fetch_finite(step, agreed.scalars, where=f"epoch {epoch}, step")
                if dist.enabled:  # the averaged gradient replaces the local one
                    for n, g in agreed.grads[0].items():
                        params[n].grad.copy_(g)
                optimizer.step()
                window.add(values, images * dist.world_size)
                step, position, stopping = step + 1, position + 1, agreed.stop
                bar.update()
                if position < steps_per_epoch:  # an epoch's last batch: after its validation
                    state.boundary(step, stopping, best=_best(best))
            row = {"epoch": epoch, **window.summary(),
                   **{f"lr_{name}": lr for name, lr in schedule.lrs().items()}}
            if val_ds is not None:
                val = _validate(model, val_ds, loop, optim.batch_size)
                row.update(val_top1=val["top1"], val_mean_class_acc=val["mean_class_acc"])
                if best.best_val_top1 is None or val["top1"] > best.best_val_top1:
                    best.best_state, best.best_epoch, best.best_val_top1 = (
                        _cpu_state(model), epoch, val["top1"])
            best.curves.append(row)
            if on_epoch is not None and dist.is_main:
                on_epoch(epoch, row)
            state.boundary(step, stopping, best=_best(best))
    if val_ds is None:
        best.best_state, best.best_epoch = _cpu_state(model), optim.epochs - 1
    elif restore_best:
        model.load_state_dict(best.best_state)
    return best


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
