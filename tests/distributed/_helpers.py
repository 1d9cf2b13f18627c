"""Shared by the distributed and checkpointing tests and the worker scripts they launch (torchrun / subprocess).

Tiny float64 models (one with BatchNorm, one without), seeded datasets, a torchrun launcher on
a free loopback port, and :class:`EmulatedRank`: the single-process equivalent of a process
group, W threads of ONE process exchanging tensors through a barrier, so the real training
loops run unchanged as "ranks" and their collectives are computed in the test process.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from metafgnet.distributed import DistContext
from metafgnet.models import MetaFGNet, build_model
from metafgnet.params import ModelParams

ROOT = Path(__file__).resolve().parents[2]
KT, KS = 3, 5  # target / source classes
TIMING = ("seconds_per_step", "images_per_s")  # curve columns that measure the wall clock


class TanhBackbone(nn.Module):
    """Conv -> tanh -> global mean: no BatchNorm, a non-zero Hessian (tanh is curved)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.feature_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W)
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))  # (B, 4)


def bn_model(seed: int = 0) -> MetaFGNet:
    """The small residual net (BatchNorm everywhere), width 4, float64."""
    torch.manual_seed(seed)
    return build_model(ModelParams(width=4), KT, KS).double()


def plain_model(seed: int = 0) -> MetaFGNet:
    torch.manual_seed(seed)
    return MetaFGNet(TanhBackbone(), KT, KS).double()


def images(n: int, k: int, seed: int, size: int = 8, dtype=torch.float64) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g, dtype=dtype),
                         torch.arange(n) % k)


def states_equal(a: dict, b: dict) -> list[str]:
    """Names of the state tensors that are not bit-identical (empty: all equal)."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def strip_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


# --------------------------------------------------------------------------- launching
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src"),
                                         env.get("PYTHONPATH", "")])
    return env


def torchrun(script: Path, *args: str, nproc: int = 2, timeout: int = 240
             ) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node N --master_port <free> script args`` on loopback."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), *args]
    return subprocess.run(cmd, env=worker_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


# --------------------------------------------------------------------------- emulation
class ThreadGroup:
    """A rendezvous for W threads: each puts a value in, all get every rank's value back."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size, timeout=120)
        self.slots: list = [None] * world_size

    def exchange(self, rank: int, value) -> list:
        self.slots[rank] = value
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before everyone has read
        return out


@dataclasses.dataclass(frozen=True)
class EmulatedRank(DistContext):
    """A rank of a :class:`ThreadGroup`: the collectives of :class:`DistContext`, in-process.

    Means are the rank-order sum divided by W, as ``SUM`` + division over gloo (for two ranks
    ``a + b`` is order-independent, so the results are bit-identical to gloo's).
    """

    group: ThreadGroup | None = None

    def barrier(self) -> None:
        self.group.barrier.wait()

    def all_reduce_mean(self, tensors):
        every = self.group.exchange(self.rank, [t.detach().clone() for t in tensors])
        out = []
        for i in range(len(tensors)):
            total = every[0][i].clone()
            for r in range(1, self.world_size):
                total = total + every[r][i]
            out.append(total.div_(self.world_size))
        return out

    def broadcast_(self, tensors, src: int = 0) -> None:
        every = self.group.exchange(self.rank, [t.detach().clone() for t in tensors])
        with torch.no_grad():
            for t, v in zip(tensors, every[src], strict=True):
                t.copy_(v)

    def all_agree(self, value: int) -> int:
        values = self.group.exchange(self.rank, value)
        if len(set(values)) != 1:
            raise RuntimeError(f"ranks disagree: {values}")
        return value


def run_emulated(world_size: int, fn) -> list:
    """``fn(rank_context)`` in ``world_size`` threads; the results in rank order."""
    group = ThreadGroup(world_size)
    results: list = [None] * world_size
    errors: list = []

    def body(rank: int) -> None:
        ctx = EmulatedRank(rank=rank, world_size=world_size, local_rank=rank,
                           local_world_size=world_size, backend="emulated",
                           device=torch.device("cpu"), group=group)
        # OpenMP's thread count is per calling thread: pin it here too, as each torchrun
        # worker does, or reductions may split differently and differ in the last bit
        torch.set_num_threads(1)
        try:
            results[rank] = fn(ctx)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)
            group.barrier.abort()

    threads = [threading.Thread(target=body, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
