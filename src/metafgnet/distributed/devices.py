"""GPU leases: which devices of this machine a process (and the ranks it starts) may use.

Grid points (``metafgnet compare --jobs N``, DVC queue workers) and tuning workers (``metafgnet
tune --workers N``) run side by side on one machine and each pick their device at start-up
(:func:`metafgnet.training.setup_runtime`). Without coordination every one of them would take
``cuda:0``. A *lease* gives each its own devices while it runs:

- one lock file per device, ``devices/gpu-<id>.lock`` in the user runtime folder
  (:func:`metafgnet.io.user_runtime_dir`), held with an exclusive ``flock``
  (:func:`metafgnet.io.hold_lock`). The kernel releases a ``flock`` when the last descriptor of
  its file closes, so a lease ends when its holder exits, crashes or is killed (SIGKILL
  included): nothing is left to clean up;
- a process asking for ``k`` devices (``runtime.nproc = k`` ranks) takes ``k`` free ones at
  once or none (no half-held sets, so two waiting processes cannot block each other), and waits
  while fewer than ``k`` are free: on one GPU, two grid points run one after the other;
- a single-process stage computes on ``cuda:<i>``, ``i`` the position of its leased device
  among the visible ones; a stage of ``k`` ranks re-executes under ``torchrun`` with
  ``CUDA_VISIBLE_DEVICES`` set to its ``k`` devices (the lock descriptors are inherited by the
  launcher, which lives as long as its ranks), and rank ``r`` takes ``cuda:r`` of them.

The devices leased among are ``CUDA_VISIBLE_DEVICES`` (its entries, indices or UUIDs) when set,
else every device CUDA reports. Leases are per user (the runtime folder is private): other
users' processes on the same GPUs are not seen. Processes started by ``torchrun`` by hand
(multi-node runs) lease nothing: the launcher placed them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from metafgnet.io import hold_lock, user_runtime_dir

log = logging.getLogger(__name__)

POLL_S = 2.0  # how often a waiting process looks for free devices again


def lease_dir() -> Path:
    """Where the device lock files live (created on first use)."""
    return user_runtime_dir() / "devices"


def visible_devices() -> list[str]:
    """The CUDA devices this process may lease among: ``CUDA_VISIBLE_DEVICES``'s entries when
    set (an empty value: none), else ``0 .. device_count - 1``."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and not d.strip().startswith("-")]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def _lock_path(device: str) -> Path:
    return lease_dir() / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


@dataclasses.dataclass
class DeviceLease:
    """``devices`` held by this process until :meth:`release` or exit; ``positions`` are their
    indices in the visible list the lease was taken from (``cuda:<position>``)."""

    devices: tuple[str, ...]
    positions: tuple[int, ...]
    _handles: list[IO[bytes]] = dataclasses.field(repr=False)

    def inherit(self) -> None:
        """Keep the locks held across ``exec`` (the torchrun relaunch)."""
        for handle in self._handles:
            os.set_inheritable(handle.fileno(), True)

    def release(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles.clear()


def _try_take(devices: Sequence[str], count: int) -> list[tuple[int, IO[bytes]]]:
    """``count`` free devices as ``(position, locked handle)``, or none at all."""
    taken: list[tuple[int, IO[bytes]]] = []
    for position, device in enumerate(devices):
        handle = hold_lock(_lock_path(device), blocking=False)
        if handle is None:
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        taken.append((position, handle))
        if len(taken) == count:
            return taken
    for _, held in taken:
        held.close()
    return []


def lease_devices(count: int, devices: Sequence[str] | None = None, *,
                  timeout_s: float | None = None, poll_s: float = POLL_S,
                  say: Callable[[str], None] | None = None) -> DeviceLease:
    """Take ``count`` of ``devices`` (default :func:`visible_devices`), waiting while fewer are
    free. Raises ``RuntimeError`` when fewer than ``count`` exist at all, or when none freed up
    within ``timeout_s`` (None: wait as long as it takes)."""
    if count < 1:  # _try_take would never succeed: a wait without end
        raise ValueError(f"count must be >= 1, got {count}")
    devices = list(visible_devices() if devices is None else devices)
    if len(devices) < count:
        raise RuntimeError(f"{count} GPU(s) needed (runtime.nproc) but only {len(devices)} "
                           f"visible ({', '.join(devices) or 'none'}): lower runtime.nproc or "
                           "set CUDA_VISIBLE_DEVICES to more devices")
    say = say or log.warning
    start, told = time.monotonic(), False
    while not (taken := _try_take(devices, count)):
        waited = time.monotonic() - start
        if timeout_s is not None and waited >= timeout_s:
            raise RuntimeError(f"no {count} free GPU(s) among {', '.join(devices)} after "
                               f"{waited:.0f} s: other processes hold them (see {lease_dir()})")
        if not told:
            say(f"waiting for {count} free GPU(s): {', '.join(devices)} are leased by other "
                f"grid points or workers (lock files in {lease_dir()})")
            told = True
        time.sleep(poll_s)
    return DeviceLease(tuple(devices[p] for p, _ in taken), tuple(p for p, _ in taken),
                       [h for _, h in taken])


_HELD: list[DeviceLease] = []  # this process's leases: held until it exits


def hold_devices(count: int, devices: Sequence[str] | None = None) -> DeviceLease:
    """:func:`lease_devices`, kept for the rest of this process's life (a stage, a tuning
    worker): the kernel releases it at exit."""
    lease = lease_devices(count, devices)
    _HELD.append(lease)
    log.info("leased GPU(s) %s", ", ".join(lease.devices))
    return lease
