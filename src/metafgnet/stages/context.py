"""What every pipeline stage shares: params, device, prepared data, the tracking run.

A stage is ``with open_stage(name, sections) as ctx: ...``. Start-up decisions (device,
precision, threads, seeds, the process group) are made here once and passed down, for the stages
that declare ``runtime``: only they import the training and distributed code, so a stage that
does not (``prepare``, ``report``) neither depends on it in ``dvc.yaml`` nor re-runs when it
changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from metafgnet.data import (
    ImageDataset,
    PreparedData,
    PreparedDatasets,
    load_prepared,
    loader_kwargs,
)
from metafgnet.io import TsvAppender, file_digest
from metafgnet.params import ExecutionParams, Params, TrackingParams, to_dict
from metafgnet.preflight import check_once
from metafgnet.provenance import repo_root
from metafgnet.stages.shell import params_path, stage_shell
from metafgnet.tracking import StageRun, execution_id, stage_run

if TYPE_CHECKING:
    from metafgnet.distributed import DistContext
    from metafgnet.training import LoopRuntime

log = logging.getLogger("metafgnet")


# Sections every stage may read without declaring them: they say where results are logged and
# how a stage executes, never what the results are (so they must not re-run anything).
UNDECLARED = ("execution", "tracking")


class DeclaredParams:
    """Read access to the params sections a stage declares in ``dvc.yaml`` (and
    :data:`UNDECLARED`), and no others.

    A stage that reads an undeclared section fails at once instead of silently depending on a
    value DVC does not track.
    """

    def __init__(self, params: Params, sections: Sequence[str]) -> None:
        self._params, self._sections = params, tuple(sections)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._sections and name not in UNDECLARED:
            raise AttributeError(
                f"this stage reads params section {name!r} but declares only "
                f"{', '.join(self._sections)} (add it to the stage's params in dvc.yaml)")
        return getattr(self._params, name)

    def declared(self) -> dict:
        """The declared sections as a plain dict (for checkpoints and trackers)."""
        full = to_dict(self._params)
        return {k: full[k] for k in self._sections}


@dataclasses.dataclass
class StageContext:
    name: str
    params: DeclaredParams
    device: torch.device
    data: PreparedData
    run: object  # metafgnet.tracking run (or its no-op twin)
    tracking: TrackingParams  # where results are logged; never changes an output
    execution: ExecutionParams  # how the stage executes; never changes an output
    dist: DistContext | None  # None in a stage that does not declare ``runtime``
    checkpoint_dir: Path  # outside every DVC out: DVC deletes outs before a stage runs
    curves: TsvAppender | None = None  # where log_step appends each row (live_curves)

    def live_curves(self, path: Path) -> None:
        """Append every logged row (timing columns left out) to ``path`` as it comes, so the
        curve grows while the stage runs; the stage rewrites it whole at the end."""
        if self.dist.is_main:
            self.curves = TsvAppender(path)

    def loop(self, *inputs: Path, seed: int | None = None) -> LoopRuntime:
        """How the stage's training loop runs (:class:`metafgnet.training.LoopRuntime`),
        decided once for the stage.

        ``inputs`` (the init model, a selection file) are fingerprinted with the declared
        params and the data digest, so a checkpoint left by an earlier configuration or an
        earlier upstream result is set aside instead of resumed. ``seed``: default the top-level
        ``seed`` (source pretraining passes its own).
        """
        from metafgnet.training import LoopRuntime, make_autocast

        p = self.params
        return LoopRuntime(
            self.device, p.seed if seed is None else seed, self.loader_kwargs,
            make_autocast(p.runtime, self.device), self.dist, self.checkpoint_dir,
            self.execution.checkpoint_every, p.runtime.channels_last,
            {"params": p.declared(), **self.input_digests(*inputs)})

    def input_digests(self, *inputs: Path) -> dict[str, str]:
        """What the stage read besides params and code: ``{"data": prepared-data digest,
        "<input path>": sha256 of the file}`` (paths as the stage names them, relative to the
        repository; a file outside it, such as ImageNet weights in torch's cache, by its name).
        Fingerprints checkpoints (:meth:`loop`) and makes a model file's provenance
        (:func:`metafgnet.models.files.provenance_digest`)."""
        return {"data": self.data.digest,
                **{(path.name if path.is_absolute() else path.as_posix()): file_digest(path)
                   for path in map(Path, inputs)}}

    def target(self, split: str, style: str | None) -> ImageDataset:
        """Target split ``train|val|test``; ``style`` picks a training augmentation, None = eval
        (:class:`metafgnet.data.PreparedDatasets`)."""
        return PreparedDatasets(self.data, self.params.data).target(split, style)

    def auxiliary(self, style: str | None, records=None) -> ImageDataset:
        return PreparedDatasets(self.data, self.params.data).auxiliary(style, records)

    @property
    def loader_kwargs(self) -> dict:
        return loader_kwargs(self.execution, self.device)

    def log_step(self, step: int, row: dict) -> None:
        """Per-step progress: a terminal line, and the numeric values to the tracker."""
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, int | float) and k != "step"}
        self.run.log_metrics(metrics, step=step)
        if self.curves is not None:
            from metafgnet.training.monitor import without_timing

            self.curves.append(without_timing(row))
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                         if "loss" in k or "top1" in k or k == "images_per_s")
        log.info("%s step %d %s", self.name, step, shown)


@contextlib.contextmanager
def open_stage(name: str, sections: Sequence[str], *, data: Path | None = None,
               lineage: bool = False) -> Iterator[StageContext]:
    """Load params, set up the runtime once, open the stage's tracking run (inside
    :func:`metafgnet.stages.shell.stage_shell`: audit, logging, how an error ends the stage).

    ``sections`` are the params sections the stage declares in ``dvc.yaml``; ``tracking`` and
    ``execution`` are always readable (where results are logged and how the stage executes,
    never what the results are). ``data``: the prepared manifests folder the stage reads (its
    command passes it), or None for a stage that reads none. With
    ``runtime.nproc > 1`` the stage re-executes itself under ``torchrun``; rank 0 alone logs,
    writes outputs and checkpoints. A SIGTERM during training checkpoints and exits 143.
    ``lineage``: the stage's run logs every params section (see
    :func:`metafgnet.tracking.stage_run`); the stage still reads only ``sections``.
    """
    with stage_shell(name, sections) as params:
        dist = None
        try:
            root = repo_root()
            check_once(execution_id(), params_path(), root)  # first stage of the execution
            dist, device = (_start_runtime(params, sections) if "runtime" in sections
                            else (None, torch.device("cpu")))
            is_main = dist is None or dist.is_main
            prepared = load_prepared(data) if data is not None else None
            run_cm = (stage_run(name, params, sections, tracking=params.tracking,
                                data_digest=prepared.digest if prepared is not None else None,
                                device=str(device), lineage=lineage)
                      if is_main else contextlib.nullcontext(StageRun.null(name)))
            with run_cm as run:
                if prepared is not None:  # the splits as MLflow dataset inputs (no image read)
                    run.log_datasets(prepared)
                yield StageContext(name, DeclaredParams(params, sections), device, prepared, run,
                                   params.tracking, params.execution, dist,
                                   root / "checkpoints" / name)
        finally:
            if dist is not None:
                from metafgnet.distributed import teardown

                teardown()


def _start_runtime(params: Params, sections: Sequence[str]) -> tuple[DistContext, torch.device]:
    """Process group (re-executing under ``execution.launcher`` when ``runtime.nnodes`` x
    ``runtime.nproc > 1``: :mod:`metafgnet.distributed.launch`), device,
    threads and seeds of a stage that declares ``runtime`` (imported here: see the module
    docstring)."""
    from metafgnet.distributed import init_distributed, relaunch_under_torchrun
    from metafgnet.distributed.context import wants_cuda
    from metafgnet.training import setup_runtime

    relaunch_under_torchrun(params.runtime.nproc, gpus=wants_cuda(params.runtime),
                            nnodes=params.runtime.nnodes, launcher=params.execution.launcher)
    dist = init_distributed(params.runtime)
    device = setup_runtime(params.runtime, params.seed if "seed" in sections else 0, dist=dist)
    return dist, device
