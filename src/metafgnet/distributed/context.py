"""The process group of a run: who this process is, decided once at start-up.

Runs are launched with ``torchrun`` (one process per GPU, or several CPU processes), which sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`init_distributed` reads them, joins the group (NCCL on GPUs, gloo on
CPU) and returns a :class:`DistContext`; a plain ``python`` run gets :data:`SINGLE`, on which
every collective is a no-op, so library code is written once for both.

Rank 0 alone logs and writes outputs: guard side effects with ``dist.is_main``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Iterator

import torch
import torch.distributed as tdist

from metafgnet.distributed.collectives import bucketed_all_reduce_mean, bucketed_broadcast_
from metafgnet.params import RuntimeParams

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT_S = 1800  # a rank that waits this long in a collective fails instead of hanging


@dataclasses.dataclass(frozen=True)
class DistContext:
    """This process's place in the group. ``world_size == 1``: single process, no collectives.

    ``device`` is the device this rank computes on (``cuda:<local_rank>`` under NCCL); ``None``
    in :data:`SINGLE`, where the caller's own device decision stands.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    device: torch.device | None = None

    @property
    def enabled(self) -> bool:
        """True when there is more than one rank (collectives actually communicate)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, checkpoints and writes outputs."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def all_reduce_mean(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Element-wise mean over ranks of each tensor (new tensors; the inputs are untouched),
        one ``all_reduce`` per bucket (:mod:`~metafgnet.distributed.collectives`)."""
        if not self.enabled:
            return list(tensors)
        return bucketed_all_reduce_mean(tensors, self.world_size)

    def broadcast_(self, tensors: list[torch.Tensor], src: int = 0) -> None:
        """Overwrite ``tensors`` in place with rank ``src``'s values."""
        if self.enabled:
            bucketed_broadcast_(tensors, src)

    def all_agree(self, value: int) -> int:
        """Check that every rank holds the same integer (e.g. a resumed step); return it."""
        if not self.enabled:
            return value
        t = torch.tensor([value, -value], dtype=torch.int64, device=self.comm_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise RuntimeError(f"ranks disagree: values range over [{-int(t[1])}, {int(t[0])}] "
                               f"(rank {self.rank} has {value})")
        return value

    def comm_device(self) -> torch.device:
        """Where collective buffers live: this rank's GPU under NCCL, else the CPU."""
        return self.device if self.backend == "nccl" else torch.device("cpu")


SINGLE = DistContext()


def launched_by_torchrun() -> bool:
    """True when the torchrun variables are set (even for a world of one)."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def wants_cuda(runtime: RuntimeParams) -> bool:
    """``runtime.device`` is cuda, or auto on a machine with a CUDA device."""
    return runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available())


def init_distributed(runtime: RuntimeParams | None = None) -> DistContext:
    """Join the process group described by the torchrun environment, or return :data:`SINGLE`.

    Backend: NCCL when ``runtime.device`` resolves to CUDA (each rank on ``cuda:LOCAL_RANK``),
    gloo otherwise. When ``runtime.nproc`` is given and torchrun started a different number of
    processes on this node, or ``runtime.nnodes`` x ``runtime.nproc`` differs from the world
    size, refuses (the result depends on the world size through BatchNorm's
    per-rank batch statistics, so it must be what the params say). Idempotent: a second call
    returns the context of the group already joined.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return SINGLE
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if runtime is not None and runtime.nproc != local_world:
        raise RuntimeError(
            f"runtime.nproc is {runtime.nproc} but torchrun started {local_world} processes on "
            f"this node: launch with --nproc_per_node {runtime.nproc} (or set runtime.nproc)")
    if runtime is not None and runtime.nproc * runtime.nnodes != world:
        raise RuntimeError(
            f"runtime.nnodes x runtime.nproc is {runtime.nnodes} x {runtime.nproc} but torchrun "
            f"started {world} processes in all: launch with --nnodes {runtime.nnodes} on "
            f"{runtime.nnodes} node(s) (or set runtime.nnodes to {world // local_world})")
    if runtime is not None and wants_cuda(runtime):
        if torch.cuda.device_count() <= local_rank:
            raise RuntimeError(f"LOCAL_RANK {local_rank} has no GPU: only "
                               f"{torch.cuda.device_count()} visible on this node")
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not tdist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        tdist.init_process_group(backend, rank=rank, world_size=world,
                                 timeout=datetime.timedelta(seconds=DEFAULT_TIMEOUT_S), **kwargs)
    return DistContext(rank, world, local_rank, local_world, backend, device)


def teardown() -> None:
    """Leave the process group (no-op when none was joined)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


@contextlib.contextmanager
def distributed(runtime: RuntimeParams | None = None) -> Iterator[DistContext]:
    """``with distributed(runtime) as dist:`` = :func:`init_distributed` + :func:`teardown`."""
    ctx = init_distributed(runtime)
    try:
        yield ctx
    finally:
        if ctx.enabled:
            teardown()

