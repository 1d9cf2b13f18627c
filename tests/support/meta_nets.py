"""Tiny float64 nets and batches for the meta-gradient tests."""

from __future__ import annotations

import torch
from torch import nn

ETA = 0.3  # large enough that the Hessian term matters
NUM_CLASSES = 5


def small_net(dtype=torch.float64, seed=0) -> nn.Module:
    """Two conv + BatchNorm layers and a linear head: a few hundred parameters."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # (B, 6)
        nn.Linear(6, NUM_CLASSES),
    )
    return net.to(dtype).train()


def batches(dtype=torch.float64, seed=1, n=6, size=8):
    g = torch.Generator().manual_seed(seed)

    def one():
        x = torch.randn(n, 3, size, size, generator=g, dtype=dtype)  # (B, C, H, W)
        y = torch.randint(0, NUM_CLASSES, (n,), generator=g)  # (B,)
        return x, y

    return one(), one()


def clones(net):
    return {n: b.clone() for n, b in net.named_buffers()}


def flat(d):
    return torch.cat([t.reshape(-1) for t in d.values()])


def rel_err(a, b):
    a, b = flat(a), flat(b)
    return ((a - b).norm() / b.norm()).item()
