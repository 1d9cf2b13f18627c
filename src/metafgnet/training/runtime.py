"""Device, precision and determinism, decided once at start-up and passed down.

Library code never picks a device on its own: stages call :func:`setup_runtime` once, get a
``torch.device`` and an autocast factory from :func:`make_autocast`, and hand both to the
training loops. Determinism facts are from docs/platform.md: CPU results are bit-identical across
processes only at the same thread count, so the thread count is pinned here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import random
import warnings
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metafgnet.distributed.context import SINGLE, DistContext, launched_by_torchrun
from metafgnet.distributed.devices import hold_devices
from metafgnet.params import RuntimeParams

AutocastFactory = Callable[[], AbstractContextManager]


@dataclasses.dataclass(frozen=True)
class LoopRuntime:
    """How a training loop runs, never what it computes: built once per stage
    (:meth:`metafgnet.stages.context.StageContext.loop`) or per tuning trial, and taken by
    every loop of :mod:`metafgnet.training`.

    ``seed`` seeds the loop (its data order and fresh heads); ``loader_kwargs``
    (:func:`metafgnet.data.loader_kwargs`) configure every loader, validation included;
    ``autocast`` from :func:`make_autocast`; ``dist`` the process group (data parallel over its
    ranks); ``checkpoint_dir`` (None: no checkpoints) receives one every ``checkpoint_every``
    steps (0: only on SIGTERM) and the loop resumes from it, setting aside a checkpoint of
    another configuration (``fingerprint_extra``: more settings a resume must match, such as
    the stage's params and input digests); ``channels_last``: batches in channels-last layout
    (give the model the same with :func:`prepare_model`).
    """

    device: torch.device
    seed: int
    loader_kwargs: dict | None = None
    autocast: AutocastFactory = contextlib.nullcontext
    dist: DistContext = SINGLE
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 0
    channels_last: bool = False
    fingerprint_extra: dict | None = None


def resolve_device(runtime: RuntimeParams) -> torch.device:
    """``cpu``, ``cuda`` (fails when no GPU is visible) or ``auto`` (cuda when available)."""
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available; "
                           "set runtime.device: cpu (or auto)")
    if runtime.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(runtime.device)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, name: str) -> int:
    """A stable sub-seed for one random stream (``"target"``, ``"aux"``, ...) of a run.

    Independent of ``PYTHONHASHSEED`` (uses CRC32), so streams repeat across processes.
    """
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63


def usable_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def shared_threads(num_threads: int, workers: int, cores: int | None = None) -> int:
    """``runtime.num_threads`` (0: every core) for each of ``workers`` processes run side by
    side (grid points, tuning workers): capped at ``max(1, cores // workers)`` so their threads
    together do not outnumber the cores. Results change with the count (bit-identity holds at
    one), so callers record the count they chose."""
    share = max(1, (cores or usable_cores()) // max(1, workers))
    return share if num_threads <= 0 else min(num_threads, share)


def threads_per_process(runtime: RuntimeParams, device: torch.device,
                        dist: DistContext | None = None) -> int:
    """Threads this process pins: ``runtime.num_threads`` (0: torch's default), shared out
    among the ranks of this node when they compute on CPU (``num_threads // ranks``, at least
    1), so ``runtime.nproc`` ranks do not each claim every core. Warns when the ranks' threads
    still outnumber the cores this process may use."""
    threads = runtime.num_threads
    ranks = dist.local_world_size if dist is not None and dist.enabled else 1
    if threads <= 0 or device.type != "cpu" or ranks <= 1:
        return threads
    share = max(1, threads // ranks)
    cores = usable_cores()
    if cores and share * ranks > cores:
        warnings.warn(f"{ranks} ranks x {share} thread(s) on {cores} core(s): the ranks "
                      "oversubscribe the CPU; lower runtime.nproc", RuntimeWarning, stacklevel=2)
    return share


def setup_runtime(
    runtime: RuntimeParams, seed: int, dist: DistContext | None = None
) -> torch.device:
    """Configure torch for this process and return the device to train on.

    ``dist`` (a :class:`metafgnet.distributed.DistContext` of more than one rank): the rank's
    own device (``cuda:<local_rank>`` under NCCL, cpu under gloo) instead of ``runtime.device``'s
    default one. A single CUDA process (a stage, a tuning worker) leases a GPU of its own for
    the rest of its life (:mod:`metafgnet.distributed.devices`), waiting while every visible one
    is leased by another grid point or worker. Every rank is seeded with the same ``seed`` (the
    ranks differ only by the data shard they draw, never by their random streams).

    - seeds ``random``, NumPy and torch with ``seed``;
    - pins the thread count (:func:`threads_per_process`) when ``runtime.num_threads`` > 0
      (needed for bit-identical CPU results, docs/platform.md);
    - ``runtime.deterministic``: ``torch.use_deterministic_algorithms(True)``, cuDNN
      deterministic, cuDNN benchmark off, and ``CUBLAS_WORKSPACE_CONFIG`` set for cuBLAS. On
      CUDA the check is ``warn_only`` because ResNet's adaptive average pooling has no
      deterministic CUDA backward (a strict check would refuse to train); on CPU it is strict;
    - ``cudnn.benchmark`` only when ``runtime.cudnn_benchmark`` and not deterministic.
    """
    device = resolve_device(runtime)
    if dist is not None and dist.enabled and dist.device is not None:
        device = dist.device
    elif device.type == "cuda" and not launched_by_torchrun():
        device = torch.device("cuda", hold_devices(1).positions[0])  # a GPU of its own
        torch.cuda.set_device(device)
    if (threads := threads_per_process(runtime, device, dist)) > 0:
        torch.set_num_threads(threads)
    if runtime.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    else:
        torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = runtime.deterministic
    torch.backends.cudnn.benchmark = runtime.cudnn_benchmark and not runtime.deterministic
    seed_everything(seed)
    return device


def make_autocast(runtime: RuntimeParams, device: torch.device) -> AutocastFactory:
    """A zero-argument factory of the forward-pass precision context.

    bf16 autocast on CUDA when ``runtime.amp`` (no loss scaling needed for bf16), otherwise
    a null context: CPU runs are always float32.
    """
    if runtime.amp and device.type == "cuda":
        return functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def prepare_model(model: nn.Module, runtime: RuntimeParams, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` (channels-last memory format when ``runtime.channels_last``)."""
    model = model.to(device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
