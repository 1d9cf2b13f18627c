"""MetaFGNet meta-training: the outer loop around one meta-iteration (the MetaFGNet objective).

One iteration, in this fixed order:

1. batches: ``T_i``, ``T_j`` = the two halves of one ``2B`` batch of ONE seeded loader over the
   target training set (disjoint by construction), ``S`` = one batch of the auxiliary set;
2. schedule: every group lr and the inner step size η take the factor ``lr_decay ** n`` after
   ``n`` milestones (:class:`~metafgnet.training.optim.StepDecay`);
3. meta-gradient of ``θ^t = (θ_b, θ_c^t)``: ``∇_θ L(T_j; θ − η ∇L(T_i; θ))``, exact (Eq. 1 of
   the MetaFGNet supplementary with the Hessian-vector product of its Eq. 5) or first order,
   from :func:`metafgnet.meta.meta_gradients` (pure); in micro-batches of ``meta.micro_batch``
   images when set (bounded memory; :mod:`metafgnet.meta.microbatch`);
4. ``T_j`` at ``θ`` without gradient: the logged ``target_acc``; under ``extra_forward`` this
   is the pass that moves the BatchNorm running statistics;
5. auxiliary loss ``L(S; θ_b, θ_c^s)`` and its gradient at the PRE-update parameters;
6. ranks agree (no-op in one process): gradients, BatchNorm running statistics and logged
   scalars averaged, stop requests combined (:func:`metafgnet.distributed.sync_step`);
7. non-finite check of every loss and gradient (stops before any weight changes);
8. outer update, ``meta.update``:
   - ``"sequential"`` (the authors' code; the published numbers came from it): two SGD steps
     on the one shared optimizer, first the meta-gradient (backbone + target head), then, after
     ``zero_grad``, ``aux_weight`` x the auxiliary gradient (backbone + source head). As in
     the authors' PyTorch 0.3, gradients are zeroed, not freed, so the head outside a step
     still takes that step's momentum and weight decay;
   - ``"summed"``: one SGD step on meta-gradient + ``aux_weight`` x auxiliary gradient.

BatchNorm is in train mode (batch statistics) in every pass. Its running statistics, used only
at evaluation, move according to ``meta.running_stats``:

- ``extra_forward`` (the authors'): step 4's no-grad forward of ``T_j`` at ``θ`` moves them,
  then the auxiliary pass moves them again as a normal forward: two updates per iteration;
- ``inner_pass``: the inner pass (``T_i`` at ``θ``, inside step 3) moves them, then the
  auxiliary pass: two updates; no extra pass over ``T_j`` (step 4 runs on copies);
- ``auxiliary_only``: only the auxiliary pass moves them: one update (step 4 on copies).

The meta loss pass at ``θ'`` never moves them.

9. step boundary: a checkpoint when ``checkpoint_every`` steps are done or SIGTERM arrived
   (:mod:`metafgnet.training.checkpointing`; a resumed run is bit-identical on CPU).

Steps 3-8 are :func:`meta_step`, the function benchmarks time; :func:`meta_train` draws the
batches, applies the schedule and handles the step boundary around it.

Distributed (``dist`` with ``W`` ranks, launched by torchrun): every rank draws the same global
batches and keeps its slice of ``T_i``, ``T_j`` and ``S`` (``B/W`` and ``A/W`` images; the
union is the single-process batch). The meta-gradient averages the inner gradient and ``G``
over ranks inside :func:`metafgnet.meta.meta_gradients` (``reduce``), so all ranks take the
global batch's inner step, and step 6 averages the per-rank ``G − η·H_r·G``: the result is the
exact gradient of ``mean_r L(T_j^r; θ − η·mean_r ∇L(T_i^r; θ))``, which without BatchNorm is the
single-process meta-gradient of the union. BatchNorm normalises with per-rank batch statistics
(ghost batches of ``B/W``; SyncBatchNorm has no double backward) and the running statistics are
averaged after every step. Only rank 0 calls ``on_step`` and writes checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import Dataset

from metafgnet.distributed import SINGLE, DistContext, check_divisible, sync_step
from metafgnet.distributed.collectives import float_buffers
from metafgnet.meta import Batch, MetaGradients, meta_gradients
from metafgnet.params import MetaParams, to_dict
from metafgnet.training.batches import BatchStream, pair_stream, to_device
from metafgnet.training.checkpointing import LoopState
from metafgnet.training.monitor import fetch_finite, grad_norm
from metafgnet.training.optim import StepDecay, build_sgd, scaled_schedule, set_grads
from metafgnet.training.runtime import AutocastFactory, LoopRuntime, derive_seed, seed_everything

RUNNING_STATS = ("extra_forward", "inner_pass", "auxiliary_only")


def meta_train(
    model: nn.Module,
    target_ds: Dataset,
    aux_ds: Dataset,
    meta: MetaParams,
    loop: LoopRuntime,
    *,
    iterations: int | None = None,
    milestones: list[int] | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Meta-train a ``MetaFGNet`` in place for ``iterations`` (default ``meta.iterations``).

    ``milestones`` (iterations, default ``meta.milestones``) override the params when the
    selected-subset stage scales the schedule. Step ``s`` is 0-based; milestone ``m`` decays
    every lr and η from step ``m`` on. Every ``meta.log_every`` steps and at the last step a
    row is appended and passed to ``on_step(step, row)`` (rank 0 only); the loss, accuracy and
    norm columns are MEANS over the ``window_steps`` steps since the previous row (``inner_loss``
    = ``L(T_i; θ)``, ``meta_loss`` = ``L(T_j; θ')``, ``aux_loss`` = ``L(S; θ)``, ``target_acc``
    = top-1 on ``T_j`` at ``θ`` before the update, ``meta_grad_norm`` / ``aux_grad_norm`` =
    global L2 norms of the unweighted gradients); lr columns and ``inner_lr`` are the values at
    ``step``. Raises :class:`~metafgnet.training.monitor.NonFiniteError` naming the step and the
    term (``inner_loss``, ``meta_loss``, ``aux_loss``, ``meta_gradient[<param>]``,
    ``aux_gradient[<param>]``). Deterministic given ``loop.seed`` on CPU at a pinned thread
    count.

    BatchNorm runs in train mode in every pass; ``meta.running_stats`` decides which passes
    move its running statistics (all at the pre-update ``θ``): ``extra_forward`` = no-grad
    ``T_j`` forward then the auxiliary pass; ``inner_pass`` = the ``T_i`` inner pass then the
    auxiliary pass; ``auxiliary_only`` = the auxiliary pass alone (module docstring).

    ``loop`` (:class:`~metafgnet.training.runtime.LoopRuntime`): device, seed, loaders,
    precision; with ``loop.dist`` data parallel over its ranks, module docstring "Distributed"
    (``meta.batch_size`` and ``meta.aux_batch_size`` are GLOBAL and must be divisible by the
    world size); with ``loop.checkpoint_dir`` resume and checkpoints, on SIGTERM too (then
    :class:`~metafgnet.training.checkpointing.TrainingInterrupted` is raised).
    """
    if meta.running_stats not in RUNNING_STATS:
        raise ValueError(f"meta.running_stats must be one of {RUNNING_STATS}")
    iterations = meta.iterations if iterations is None else int(iterations)
    milestones = list(meta.milestones if milestones is None else milestones)
    device, seed, dist = loop.device, loop.seed, loop.dist
    local_b = check_divisible(meta.batch_size, dist.world_size, "meta.batch_size")
    check_divisible(meta.aux_batch_size, dist.world_size, "meta.aux_batch_size")
    seed_everything(seed)
    model.to(device).train()
    optimizer = build_meta_optimizer(model, meta)
    schedule = StepDecay(optimizer, milestones, meta.lr_decay)
    state = LoopState(loop, model, optimizer, {
        "loop": "meta_train", "meta": to_dict(meta), "seed": seed, "iterations": iterations,
        "milestones": milestones, "target_items": len(target_ds), "aux_items": len(aux_ds)})
    state.restore()
    # the data order is a function of (seed, batch counter): streams restart at ``start``
    start = state.step
    target_stream = BatchStream(target_ds, 2 * meta.batch_size, seed=derive_seed(seed, "target"),
                                segments=[meta.batch_size, meta.batch_size], rank=dist.rank,
                                world_size=dist.world_size, loader_kwargs=loop.loader_kwargs)
    aux_stream = BatchStream(aux_ds, meta.aux_batch_size, seed=derive_seed(seed, "aux"),
                             rank=dist.rank, world_size=dist.world_size,
                             loader_kwargs=loop.loader_kwargs)
    pairs, aux_batches = pair_stream(target_stream, local_b, start), aux_stream.endless(start)
    with state.running(iterations) as bar:
        for step in range(start, iterations):
            # 1. batches (this rank's shards of T_i, T_j and S)
            t_i, t_j = (to_device(b, device, channels_last=loop.channels_last)
                        for b in next(pairs))
            s_batch = to_device(next(aux_batches), device, channels_last=loop.channels_last)
            # 2. schedule: group lrs and η share the decay factor
            inner_lr = meta.inner_lr * schedule.apply(step)
            # 3.-8. meta-gradient, target_acc, auxiliary gradient, ranks agree, checks, update
            values, stopping = meta_step(model, optimizer, (t_i, t_j, s_batch), inner_lr, meta,
                                         step=step, autocast=loop.autocast, dist=dist,
                                         stop_requested=state.stop.requested)
            state.window.add(values, images=2 * meta.batch_size + meta.aux_batch_size)
            bar.update()
            if (step + 1) % meta.log_every == 0 or step == iterations - 1:
                row = _log_row(step, state.window.summary(), schedule.lrs(), inner_lr)
                state.curves.append(row)
                if on_step is not None and dist.is_main:
                    on_step(step, row)
            # 9. step boundary: checkpoint when due or asked to stop
            state.boundary(step + 1, stopping)
    return state.curves


def subset_schedule(meta: MetaParams, kept: int, total: int) -> tuple[int, list[int]]:
    """docs/method.md, stage 4: meta-training again on ``kept`` of ``total`` auxiliary images
    runs ``meta.iterations`` and ``meta.milestones`` scaled by the kept fraction
    (:func:`metafgnet.training.optim.scaled_schedule`)."""
    return scaled_schedule(meta.iterations, meta.milestones, kept / max(1, total))


def build_meta_optimizer(model: nn.Module, meta: MetaParams) -> torch.optim.SGD:
    """The one SGD optimizer of meta-training: backbone, target head and source head groups
    with ``meta``'s learning rates, momentum and weight decay (decayed by :class:`StepDecay`)."""
    return build_sgd(model, {"backbone": meta.backbone_lr, "target_head": meta.target_head_lr,
                             "source_head": meta.source_head_lr},
                     momentum=meta.momentum, weight_decay=meta.weight_decay)


def meta_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: tuple[Batch, Batch, Batch],
    inner_lr: float,
    meta: MetaParams,
    *,
    step: int = 0,
    autocast: AutocastFactory = contextlib.nullcontext,
    dist: DistContext = SINGLE,
    stop_requested: bool = False,
    gradient_fn: Callable[..., MetaGradients] | None = None,
) -> tuple[dict[str, float], bool]:
    """Steps 3-8 of one meta-iteration (module docstring), as :func:`meta_train` runs them.

    ``batches`` are this rank's ``(T_i, T_j, S)`` on the model's device, each ``(x, y)``;
    ``inner_lr`` is η after the schedule (step 2), whose group lrs ``optimizer`` (from
    :func:`build_meta_optimizer`) already holds. Updates ``model`` in place (weights, and the
    BatchNorm running statistics by ``meta.running_stats``). Returns the finite-checked,
    rank-averaged scalars of the step (losses, ``target_acc``, gradient norms) and whether any
    rank asked to stop. Raises :class:`~metafgnet.training.monitor.NonFiniteError` (step
    ``step``) before any weight changes. ``gradient_fn`` computes step 3 with the signature of
    :func:`~metafgnet.meta.meta_gradients` (``None``: that function); benchmarks swap in
    other libraries' meta-gradients to time them inside the same iteration.
    """
    t_i, t_j, s_batch = batches
    target_net, source_net = model.target_net(), model.source_net()
    target_names = [n for n, p in target_net.named_parameters() if p.requires_grad]
    # 3. meta-gradient on θ^t (pure; moves running stats only under inner_pass)
    gradient_fn = gradient_fn or meta_gradients
    with autocast():
        mg = gradient_fn(target_net, t_i, t_j, inner_lr, order=meta.order,
                         params=target_names, return_losses=True,
                         update_running_stats=meta.running_stats == "inner_pass",
                         reduce=dist.all_reduce_mean if dist.enabled else None,
                         micro_batch=meta.micro_batch)
    # 4. T_j at θ, no grad: target_acc; moves running stats only under extra_forward
    target_acc = _batch_accuracy(target_net, t_j, autocast,
                                 move_stats=meta.running_stats == "extra_forward")
    # 5. auxiliary loss and gradient at the pre-update θ (a normal train-mode forward)
    aux_loss, aux_grads = _aux_gradients(source_net, s_batch, autocast)
    # 6. ranks agree: mean gradients, running stats, scalars; any stop request
    running = float_buffers(model) if dist.enabled else []
    agreed = sync_step(dist, [mg.grads, aux_grads], running, {
        "inner_loss": mg.inner_loss, "meta_loss": mg.outer_loss, "aux_loss": aux_loss,
        "target_acc": target_acc}, stop_requested)
    meta_grads, aux_grads = agreed.grads
    sc = agreed.scalars
    # 7. stop before the update if anything is NaN/inf (one host sync per step)
    values = fetch_finite(step, {
        "inner_loss": sc["inner_loss"], "meta_loss": sc["meta_loss"],
        "aux_loss": sc["aux_loss"], "meta_gradient_norm": grad_norm(meta_grads),
        "aux_gradient_norm": grad_norm(aux_grads), "target_acc": sc["target_acc"],
    }, grads={"meta_gradient": meta_grads, "aux_gradient": aux_grads})
    # 8. outer update
    _outer_update(model, optimizer, meta_grads, aux_grads, meta)
    return values, agreed.stop


def _aux_gradients(
    net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], autocast: AutocastFactory
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The auxiliary loss ``L(S; θ_b, θ_c^s)`` and its gradient by parameter name, at the current
    parameters. A normal train-mode forward: BatchNorm running statistics move here."""
    x, y = batch  # (B, C, H, W), (B,)
    with autocast():
        loss = F.cross_entropy(net(x), y)
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named])
    return loss.detach(), {n: g for (n, _), g in zip(named, grads, strict=True)}


def _batch_accuracy(
    net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], autocast: AutocastFactory,
    *, move_stats: bool,
) -> torch.Tensor:
    """Top-1 of ``net`` on ``batch`` in train mode, no grad, as a 0-d tensor (no host sync).

    ``move_stats=False`` runs the forward on copies of the buffers, so BatchNorm normalises
    exactly as in train mode but the module's running statistics stay where they are.
    """
    x, y = batch  # (B, C, H, W), (B,)
    with torch.no_grad(), autocast():
        if move_stats:
            logits = net(x)  # (B, K)
        else:
            state = {**dict(net.named_parameters()),
                     **{n: b.clone() for n, b in net.named_buffers()}}
            logits = functional_call(net, state, (x,))  # (B, K)
    return (logits.argmax(dim=1) == y).float().mean()


def _outer_update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta_grads: dict[str, torch.Tensor],
    aux_grads: dict[str, torch.Tensor],
    meta: MetaParams,
) -> None:
    """The outer SGD update (step 8), ``sequential`` or ``summed``."""
    aux = {n: meta.aux_weight * g for n, g in aux_grads.items()}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if meta.update == "sequential":
        set_grads(named, meta_grads)  # backbone + target head; source head sees 0
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        set_grads(named, aux)  # backbone + source head; target head sees 0
        optimizer.step()
    elif meta.update == "summed":
        total = dict(meta_grads)
        for n, g in aux.items():
            total[n] = total[n] + g if n in total else g
        set_grads(named, total)
        optimizer.step()
    else:
        raise ValueError(f"unknown meta.update {meta.update!r}")
    optimizer.zero_grad(set_to_none=True)  # free the gradient memory until the next step


def _log_row(step: int, means: dict[str, float], lrs: dict[str, float], inner_lr: float) -> dict:
    return {
        "step": step,
        "inner_loss": means["inner_loss"],
        "meta_loss": means["meta_loss"],
        "aux_loss": means["aux_loss"],
        "target_acc": means["target_acc"],
        "meta_grad_norm": means["meta_gradient_norm"],
        "aux_grad_norm": means["aux_gradient_norm"],
        "lr_backbone": lrs["backbone"],
        "lr_target_head": lrs["target_head"],
        "lr_source_head": lrs["source_head"],
        "inner_lr": inner_lr,
        "window_steps": means["window_steps"],
        "seconds_per_step": means["seconds_per_step"],
        "images_per_s": means["images_per_s"],
    }
