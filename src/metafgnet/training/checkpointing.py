"""Resumable training: periodic and on-SIGTERM checkpoints, atomic and verified.

One mechanism for every loop (meta-training, pretraining, fine-tuning, joint): a loop makes a
:class:`LoopState` (a :class:`Checkpointer` for its ``checkpoint_dir`` and a *fingerprint* of
what it was asked to do), restores it once before its first step, and at each step boundary
saves when ``checkpoint_every`` steps are done or a stop was requested (SIGTERM,
:mod:`metafgnet.training.preemption`).

Files: ``ckpt-<step>.pt`` (``torch.save`` payload) and a sidecar ``ckpt-<step>.json`` with the
payload's SHA-256 and size, the step and the fingerprint digest. Both are written to a temporary
file, ``fsync``-ed and renamed into place (:func:`metafgnet.io.atomic_path`), payload first;
a checkpoint counts only once its sidecar exists and matches. The last :data:`KEEP` are kept.
On restore, a truncated or corrupt latest checkpoint (missing sidecar, wrong size or checksum,
unreadable payload) is skipped with a warning naming the file and the previous one is used.

Loading is ``torch.load(weights_only=True)``: tensors and plain values only, so a crafted
checkpoint cannot run code; one that holds anything else is refused (skipped with a warning,
like a corrupt one).

Exactness: the payload holds model and optimizer state (momentum buffers), the step counter,
the curves and the partial logging window, and every RNG state (Python, NumPy, torch CPU,
CUDA). The learning rates and the data order need no state: they are pure functions of the
step (:class:`~metafgnet.training.optim.StepDecay`) and of ``seed`` and the batch counter
(:mod:`metafgnet.training.batches`), so the schedule and the streams restart at the stored step.
On CPU at a pinned thread count a resumed run ends bit-identical to an uninterrupted one.

A checkpoint of another run (other params, seed, iteration count, dataset size, model shapes,
world size, inputs) is never resumed and never blocks: it is moved aside, beside the directory
(``<dir>.set-aside-<digest>/``), a :class:`CheckpointWarning` names the differing keys and where
it went, and training starts fresh. Settings that cannot change results (checkpoint cadence,
loader workers: the ``execution`` params) are not in the fingerprint.

In a process group only rank 0 writes; every rank reads the same files on restore, so the
directory must be on a file system all nodes see (any single-node run qualifies).

Where: OUTSIDE a DVC stage's outputs (DVC deletes outs before it runs a stage), e.g.
``checkpoints/<stage>/`` (git-ignored); a stage removes it once its outputs are written
(:func:`remove_checkpoints`), so a later run with other params starts fresh instead of being
refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import random
import re
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metafgnet.distributed.collectives import module_state_tensors
from metafgnet.distributed.context import SINGLE, DistContext
from metafgnet.io import write_bytes
from metafgnet.progress import Progress
from metafgnet.training.monitor import WindowMean
from metafgnet.training.preemption import StopRequest, TrainingInterrupted
from metafgnet.training.runtime import LoopRuntime

log = logging.getLogger("metafgnet")

KEEP = 2
FORMAT_VERSION = 2  # 2: RNG state as plain values (loads with weights_only=True)
_NAME = re.compile(r"^ckpt-(\d+)\.(pt|json)$")


class CheckpointWarning(UserWarning):
    """A checkpoint file was unusable and an older one is used instead."""


# ------------------------------------------------------------------------------ fingerprint
def model_signature(model: torch.nn.Module) -> str:
    """Digest of the names, shapes and dtypes of every state tensor of ``model``."""
    spec = [(k, list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return out


# ------------------------------------------------------------------------------ RNG state
def rng_state() -> dict[str, Any]:
    """Every global RNG state: Python ``random``, NumPy, torch CPU and each CUDA device, as
    plain values and tensors only (NumPy's key array as a list of ints), so that a checkpoint
    loads with ``torch.load(weights_only=True)``."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": str(kind), "key": [int(k) for k in key], "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], np.array(numpy_state["key"], dtype=np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"], numpy_state["gauss"]))
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------ files
def checkpoint_steps(directory: Path) -> list[int]:
    """Steps that have a payload or a sidecar in ``directory``, newest first."""
    if not directory.is_dir():
        return []
    steps = {int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name))}
    return sorted(steps, reverse=True)


def paths_for(directory: Path, step: int) -> tuple[Path, Path]:
    return directory / f"ckpt-{step:09d}.pt", directory / f"ckpt-{step:09d}.json"


def read_verified(directory: Path, step: int) -> dict:
    """The payload of checkpoint ``step``; raises ``ValueError`` saying what is wrong."""
    payload_path, sidecar_path = paths_for(directory, step)
    if not sidecar_path.is_file():
        raise ValueError(f"{payload_path}: no sidecar {sidecar_path.name} (write interrupted)")
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{sidecar_path}: unreadable sidecar ({exc})") from None
    if not payload_path.is_file():
        raise ValueError(f"{payload_path}: missing")
    data = payload_path.read_bytes()
    if len(data) != sidecar.get("bytes"):
        raise ValueError(f"{payload_path}: {len(data)} bytes, sidecar says {sidecar.get('bytes')}"
                         " (truncated)")
    if hashlib.sha256(data).hexdigest() != sidecar.get("sha256"):
        raise ValueError(f"{payload_path}: SHA-256 does not match its sidecar (corrupt)")
    try:  # tensors and plain values only: a checkpoint never runs code when it is loaded
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"[^\n]*GLOBAL[^\n]*", str(exc))  # torch names the refused global
        raise ValueError(f"{payload_path}: refused, not loaded: it holds pickled code or objects,"
                         " not only tensors and plain values ("
                         f"{found[0].strip() if found else exc})") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means unusable
        raise ValueError(f"{payload_path}: unreadable payload ({exc})") from None


def remove_checkpoints(directory: str | Path) -> None:
    """Delete every checkpoint of ``directory`` (a stage calls this once its outputs exist)."""
    directory = Path(directory)
    for step in checkpoint_steps(directory):
        for p in paths_for(directory, step):
            p.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()


# ------------------------------------------------------------------------------ checkpointer
class Checkpointer:
    """Writes and restores one loop's checkpoints in ``directory`` (``None``: all no-ops)."""

    def __init__(self, directory: str | Path | None, *, every: int, config: dict[str, Any],
                 dist: DistContext = SINGLE) -> None:
        if every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {every}")
        self.directory = None if directory is None else Path(directory)
        self.every, self.dist = every, dist
        # a JSON-canonical copy of ``config``: what a checkpoint must have been made under
        self.fingerprint = json.loads(json.dumps(config, sort_keys=True, default=str))
        self.digest = hashlib.sha256(
            json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()
        self._revision: str | None = None

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def due(self, steps_done: int) -> bool:
        """True when a periodic checkpoint falls after ``steps_done`` steps."""
        return self.enabled and self.every > 0 and steps_done % self.every == 0

    def restore(self) -> dict | None:
        """The newest good checkpoint's payload, or None (no directory / nothing saved yet).

        Corrupt or partial checkpoints are skipped with a :class:`CheckpointWarning`; a good
        one made under another fingerprint is moved aside (:meth:`_set_aside`), also with a
        warning, and None is returned: training starts fresh.
        """
        if self.directory is None:
            return None
        payload = None
        for step in checkpoint_steps(self.directory):
            try:
                payload = read_verified(self.directory, step)
                break
            except ValueError as exc:
                if self.dist.is_main:
                    warnings.warn(f"skipping unusable checkpoint: {exc}", CheckpointWarning,
                                  stacklevel=2)
        step = -1 if payload is None else int(payload["step"])
        self.dist.all_agree(step)  # every rank must resume from the same place
        if payload is None:
            return None
        if payload.get("fingerprint_digest") != self.digest:
            diffs = _differences(payload.get("fingerprint", {}), self.fingerprint)
            aside = self._set_aside(str(payload.get("fingerprint_digest", "unknown")))
            if self.dist.is_main:
                warnings.warn(
                    f"{self.directory} held a checkpoint (step {step}) of a different run ("
                    + "; ".join(diffs or ["fingerprint digests differ"])
                    + f"); moved to {aside}, training starts fresh", CheckpointWarning,
                    stacklevel=2)
            return None
        if self.dist.is_main:
            log.info("resuming from %s (step %d)", paths_for(self.directory, step)[0], step)
        return payload

    def _set_aside(self, digest: str) -> Path:
        """Move every checkpoint of the directory to a sibling ``<dir>.set-aside-<digest>``
        (rank 0; a numbered suffix if that exists); returns where they went."""
        base = self.directory.with_name(f"{self.directory.name}.set-aside-{digest[:12]}")
        aside, n = base, 1
        while aside.exists():
            n += 1
            aside = base.with_name(f"{base.name}-{n}")
        if self.dist.is_main:
            aside.mkdir(parents=True)
            for step in checkpoint_steps(self.directory):
                for path in paths_for(self.directory, step):
                    if path.exists():
                        os.replace(path, aside / path.name)
        self.dist.barrier()
        return aside

    def save(self, steps_done: int, state: dict[str, Any]) -> Path | None:
        """Write ``state`` as the checkpoint after ``steps_done`` steps (rank 0); keep the last
        :data:`KEEP`. Every rank returns the payload path (None without a directory)."""
        if self.directory is None:
            return None
        payload_path, sidecar_path = paths_for(self.directory, steps_done)
        if self.dist.is_main:
            if self._revision is None:
                from metafgnet.provenance import git_revision

                self._revision = git_revision()
            payload = {**state, "step": steps_done, "fingerprint": self.fingerprint,
                       "fingerprint_digest": self.digest, "format_version": FORMAT_VERSION,
                       "world_size": self.dist.world_size, "git_revision": self._revision}
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            data = buffer.getvalue()
            write_bytes(payload_path, data)
            sidecar = {"step": steps_done, "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest(),
                       "fingerprint_digest": self.digest}
            write_bytes(sidecar_path, (json.dumps(sidecar, indent=1) + "\n").encode())
            self._prune()
        self.dist.barrier()
        return payload_path

    def _prune(self) -> None:
        for step in checkpoint_steps(self.directory)[KEEP:]:
            for p in paths_for(self.directory, step):
                p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ loop state
class LoopState:
    """One loop's checkpoints (module docstring) and what it does at each step boundary.

    Made once the model is on its device and its optimizer exists (every rank then takes rank
    0's weights); the fingerprint is ``config`` (its ``loop`` names the loop) plus the world
    size, the model's shapes and ``loop.fingerprint_extra``.
    """

    def __init__(self, loop: LoopRuntime, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, config: dict[str, Any]) -> None:
        dist = self.dist = loop.dist
        dist.broadcast_(module_state_tensors(model))  # every rank starts from rank 0's weights
        fingerprint = {**config, "world_size": dist.world_size, "model": model_signature(model),
                       "extra": loop.fingerprint_extra}
        self.ckpt = Checkpointer(loop.checkpoint_dir, every=loop.checkpoint_every,
                                 config=fingerprint, dist=dist)
        self.name, self.model, self.optimizer = config["loop"], model, optimizer
        self.window, self.curves, self.step = WindowMean(), [], 0
        self.stop = StopRequest(self.ckpt.enabled)

    def restore(self) -> dict | None:
        """Load the newest good checkpoint (:meth:`Checkpointer.restore`) into the model, the
        optimizer, :attr:`window`, :attr:`curves` and :attr:`step`, the RNG states last (nothing
        here draws from them afterwards); return its payload, or None to start fresh."""
        payload = self.ckpt.restore()
        if payload is not None:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.window.load_state_dict(payload["window"])
            set_rng_state(payload["rng"])
            self.curves, self.step = list(payload["curves"]), payload["step"]
        return payload

    @contextlib.contextmanager
    def running(self, total: int) -> Iterator[Progress]:
        """SIGTERM handling and the progress of ``total`` steps, from :attr:`step` on."""
        with self.stop, Progress(self.name, total, unit="step", initial=self.step,
                                 enabled=self.dist.is_main) as bar:
            yield bar

    def boundary(self, steps_done: int, stopping: bool, **extra: Any) -> None:
        """After ``steps_done`` steps: checkpoint (the loop's state, every RNG state and
        ``extra``) when due or ``stopping`` (a rank asked to stop), then raise
        :class:`TrainingInterrupted` when stopping."""
        if not (self.ckpt.due(steps_done) or stopping):
            return
        path = self.ckpt.save(steps_done, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "curves": list(self.curves), "window": self.window.state_dict(), "rng": rng_state(),
            **extra})
        if stopping:
            raise TrainingInterrupted(steps_done, path, self.stop.signum or signal.SIGTERM)
