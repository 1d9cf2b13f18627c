"""Pure functional pieces of one meta-iteration: the loss at given parameters and the inner step.

Everything here works on explicit ``{name: tensor}`` dictionaries through
``torch.func.functional_call``, so the module's own parameters and buffers are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Batch = tuple[Tensor, Tensor]  # (x: (B, C, H, W), y: (B,) class indices)


def inner_step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], inner_lr: float) -> dict[str, Tensor]:
    """One plain SGD step ``θ' = θ − η·g``: the inner step of the MetaFGNet objective (no
    momentum, no weight decay).

    Pure: returns new tensors and differentiates like any torch expression, so it serves the
    exact meta-gradient (tests unroll through it with ``create_graph``) as well as the detached
    update used by :func:`metafgnet.meta.meta_gradients`. ``grads`` must have every key of
    ``params``.
    """
    missing = [name for name in params if name not in grads]
    if missing:
        raise KeyError(f"inner_step: no gradient for {', '.join(missing)}")
    return {name: p - inner_lr * grads[name] for name, p in params.items()}


def batch_loss(
    net: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    batch: Batch,
) -> Tensor:
    """Mean cross-entropy of ``net`` on ``batch`` evaluated at ``params`` (a 0-d tensor).

    ``buffers`` (BatchNorm running statistics and counters) are used as given and, in train
    mode, updated in place: pass clones to keep the module's own buffers unchanged. Runs in the
    caller's autocast context; ``cross_entropy`` is autocast to float32 there.
    """
    x, y = batch  # (B, C, H, W), (B,)
    logits = functional_call(net, {**params, **buffers}, (x,))  # (B, K)
    return F.cross_entropy(logits, y)


def cloned_buffers(net: nn.Module) -> dict[str, Tensor]:
    """Copies of every buffer of ``net``: BatchNorm may write to them, the module never sees it."""
    return {name: b.clone() for name, b in net.named_buffers()}


def split_params(
    net: nn.Module, names: list[str] | None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(adapted, fixed)``: detached copies-by-reference of ``net``'s parameters.

    ``adapted`` are fresh autograd leaves (``requires_grad=True``) sharing storage with the
    parameters: the inner step adapts them. ``fixed`` are detached, so no graph is built for
    them. ``names=None`` adapts every parameter with ``requires_grad``.
    """
    named = dict(net.named_parameters())
    if names is None:
        names = [n for n, p in named.items() if p.requires_grad]
    else:
        names = list(dict.fromkeys(names))  # keep order, drop repeats
        unknown = [n for n in names if n not in named]
        if unknown:
            raise ValueError(
                f"params names not among the parameters of {type(net).__name__}: "
                f"{', '.join(unknown)}"
            )
    if not names:
        raise ValueError("meta_gradients needs at least one parameter to adapt")
    chosen = set(names)
    adapted = {n: named[n].detach().requires_grad_(True) for n in names}
    fixed = {n: p.detach() for n, p in named.items() if n not in chosen}
    return adapted, fixed


def autocast_off(device: torch.device) -> torch.autocast:
    """A context with autocast disabled for ``device``: backward passes run in the dtypes the
    forward recorded, never re-cast (autocast is meant for forward regions only)."""
    return torch.autocast(device_type=device.type, enabled=False)


def grads_or_zeros(loss: Tensor, inputs: Sequence[Tensor], **kwargs: Any) -> list[Tensor]:
    """``autograd.grad`` with zeros for inputs the output does not depend on."""
    return list(
        torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True, **kwargs)
    )


def hessian_vector_product(g: list[Tensor], theta: list[Tensor], v: list[Tensor]) -> list[Tensor]:
    """``H·v = ∇_θ Σ_k v_k·g_k`` (Eq. 5 of the MetaFGNet supplementary), ``g = ∇L(T_i; θ)``
    given with its graph.

    Written as one vector-Jacobian product (``grad_outputs=v``), which is exactly the gradient
    of ``Σ v·g`` with ``v`` held constant, without building the sum. Frees the inner graph.
    """
    pairs = [(gk, vk) for gk, vk in zip(g, v, strict=True) if gk.requires_grad]
    if not pairs:  # the loss is linear in every adapted parameter: H = 0
        return [torch.zeros_like(t) for t in theta]
    outputs, grad_outputs = zip(*pairs, strict=True)
    return list(
        torch.autograd.grad(
            outputs, theta, grad_outputs=grad_outputs, allow_unused=True, materialize_grads=True
        )
    )
