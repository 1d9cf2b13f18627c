"""What every pipeline stage shares: params, device, prepared data, the tracking run.

A stage is ``with open_stage(name, sections) as ctx: ...``. Start-up decisions (device,
precision, threads, seeds) are made here once and passed down (STYLE.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from metafgnet.data import (
    ImageDataset,
    PreparedData,
    eval_transform,
    load_prepared,
    train_transform,
)
from metafgnet.params import Params, RuntimeParams, TrackingParams, load_params, to_dict
from metafgnet.stages import audit
from metafgnet.tracking import stage_run
from metafgnet.training import setup_runtime

PREPARED = Path("data/prepared/manifests")

log = logging.getLogger("metafgnet")


class DeclaredParams:
    """Read access to the params sections a stage declares in ``dvc.yaml``, and no others.

    A stage that reads an undeclared section fails at once instead of silently depending on a
    value DVC does not track.
    """

    def __init__(self, params: Params, sections: Sequence[str]) -> None:
        self._params, self._sections = params, tuple(sections)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._sections:
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

    def target(self, split: str, style: str | None) -> ImageDataset:
        """Target split ``train|val|test``; ``style`` picks a training augmentation, None = eval."""
        records = {"train": self.data.train, "val": self.data.val, "test": self.data.test}[split]
        return ImageDataset(records, self.data.target_root, self._transform(style))

    def auxiliary(self, style: str | None, records=None) -> ImageDataset:
        records = self.data.auxiliary if records is None else records
        return ImageDataset(records, self.data.auxiliary_root, self._transform(style))

    def _transform(self, style: str | None):
        data = self.params.data
        return eval_transform(data) if style is None else train_transform(data, style)

    @property
    def loader_kwargs(self) -> dict:
        d = self.params.data
        kwargs = {"num_workers": d.num_workers, "pin_memory": d.pin_memory and self.device.type == "cuda"}
        if d.num_workers > 0:
            kwargs["prefetch_factor"] = d.prefetch_factor
        return kwargs

    def log_step(self, step: int, row: dict) -> None:
        """Per-step progress: a terminal line, and the numeric values to the tracker."""
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, int | float) and k != "step"}
        self.run.log_metrics(metrics, step=step)
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if "loss" in k or "top1" in k)
        log.info("%s step %d %s", self.name, step, shown)


def _configure_logging() -> None:
    stream = sys.stderr
    fmt = "%(message)s" if stream.isatty() else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, stream=stream, force=True)


@contextlib.contextmanager
def open_stage(name: str, sections: Sequence[str], *, needs_data: bool = True) -> Iterator[StageContext]:
    """Load params, set up the runtime once, open the stage's tracking run.

    ``sections`` are the params sections the stage declares in ``dvc.yaml``; ``tracking`` is
    always readable (it says where results are logged, never what they are).
    """
    audit.start()
    _configure_logging()
    params = load_params(os.environ.get("METAFGNET_PARAMS", "params.yaml"))
    runtime = params.runtime if "runtime" in sections else RuntimeParams()
    device = setup_runtime(runtime, params.seed if "seed" in sections else 0)
    data = load_prepared(PREPARED) if needs_data else None
    digest = data.digest if data is not None else None
    with stage_run(name, params, sections, tracking=params.tracking, data_digest=digest,
                   device=str(device)) as run:
        yield StageContext(name, DeclaredParams(params, sections), device, data, run,
                           params.tracking)
    audit.finish(name, list(sections))
