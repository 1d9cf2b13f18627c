"""Every problem a run would meet, found before the first stage: ``metafgnet check``, and
:func:`check_once` before the first stage of every pipeline execution.

A pipeline meets its problems one stage at a time (missing data in ``prepare``, no GPU in
``pretrain``, ImageNet weights offline at model construction, a full disk at the first
checkpoint). This module looks for all of them at once, cheaply, and returns one message per
problem, each naming the key or file and the fix:

- params: every invalid key (:func:`metafgnet.params.load_params`); the other checks need
  valid params, so they run only when these are;
- device: ``runtime.device: cuda`` (or ``nproc`` GPUs) without that many CUDA devices;
- data: the target and auxiliary sets read by the same readers ``prepare`` uses (names every
  missing or malformed metadata file); the synthetic benchmark is generated, so its roots may
  be missing;
- weights: ``model.pretrained: imagenet`` without the weights in the torch hub cache and with
  their host unreachable;
- disk: less than :data:`MIN_FREE_BYTES` free where outputs and checkpoints are written;
- database drivers: a PostgreSQL ``tune.storage`` or tracking URI (``MLFLOW_TRACKING_URI``)
  without its SQLAlchemy driver (``psycopg`` for ``postgresql://``, the ``postgres`` extra).

:func:`warnings` names what works but is unsafe: a dataset outside ``data/external/``, where
``dvc repro`` cannot see its files change.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from pathlib import Path

from metafgnet.data.errors import DataError
from metafgnet.errors import UserError
from metafgnet.io import file_lock, user_runtime_dir
from metafgnet.params import Params, ParamsError, load_params

log = logging.getLogger("metafgnet")

MIN_FREE_BYTES = 2 * 2**30
EXTERNAL = Path("data/external")  # a DVC dependency of ``prepare`` (data/external/README.md)


def problems(params_file: str | Path = "params.yaml", root: str | Path = ".") -> list[str]:
    """Every problem found (empty: ready to run)."""
    try:
        params = load_params(params_file)
    except ParamsError as exc:
        return [line.strip() for line in str(exc).splitlines()[1:]] or [str(exc)]
    return [*_device(params), *_data(params), *_weights(params), *_disk(Path(root)),
            *_drivers(params)]


def warnings(params_file: str | Path = "params.yaml", root: str | Path = ".") -> list[str]:
    """What works but is unsafe (module docstring); empty when the params are invalid."""
    try:
        params = load_params(params_file)
    except ParamsError:
        return []
    return _data_location(params, Path(root))


class PreflightFailed(UserError):
    """Problems found before the first stage of an execution, all of them."""

    def __init__(self, found: list[str]) -> None:
        super().__init__(f"{len(found)} problem(s) found before the first stage "
                         "(`metafgnet check` lists them too):\n"
                         + "\n".join(f"- {problem}" for problem in found))


def check_once(execution: str, params_file: str | Path, root: str | Path) -> None:
    """:func:`problems` and :func:`warnings` once per pipeline execution (``execution``: its id,
    :func:`metafgnet.tracking.execution_id`): the first stage of each ``dvc repro`` or
    ``dvc exp run`` checks, later stages find its mark. Logs each warning; raises
    :class:`PreflightFailed` listing every problem, so the execution stops before its first
    stage does any work."""
    mark = user_runtime_dir() / f"checked-{execution}"
    with file_lock(mark.with_suffix(".lock")):
        if mark.exists():
            return
        found = problems(params_file, root)
        if found:
            raise PreflightFailed(found)
        for warning in warnings(params_file, root):
            log.warning("%s", warning)
        mark.touch()


def _device(params: Params) -> list[str]:
    import torch

    rt = params.runtime
    if rt.device != "cuda":
        return []
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found == 0:
        return ["runtime.device is cuda but no CUDA device is visible; set runtime.device: cpu "
                "(or auto)"]
    if rt.nproc > found:
        return [f"runtime.nproc is {rt.nproc} but only {found} CUDA device(s) are visible; "
                f"set runtime.nproc to at most {found}"]
    return []


def _data(params: Params) -> list[str]:
    from metafgnet.data.readers import read_auxiliary, read_target

    out = []
    d = params.data
    for kind, read, name, root in (("target", read_target, d.target, d.target_root),
                                   ("auxiliary", read_auxiliary, d.auxiliary, d.auxiliary_root)):
        if name == "synthetic" and not Path(root).exists():
            continue  # `prepare` generates it
        try:
            read(d)
        except DataError as exc:
            out.append(f"data ({kind}): {exc}")
    return out


def _data_location(params: Params, root: Path) -> list[str]:
    """Datasets outside ``data/external`` are invisible to ``dvc repro``: a changed file there
    would keep stale manifests and models."""
    external = (root / EXTERNAL).resolve()
    out = []
    d = params.data
    for key, name, path in (("data.target_root", d.target, d.target_root),
                            ("data.auxiliary_root", d.auxiliary, d.auxiliary_root)):
        if name in ("synthetic", "none"):
            continue
        resolved = (root / path).resolve() if not Path(path).is_absolute() else Path(path)
        if not resolved.is_relative_to(external):
            out.append(f"{key} ({path}) is outside {EXTERNAL}/, so `dvc repro` cannot see when "
                       f"its files change; copy the dataset under {EXTERNAL}/ (DVC does not "
                       f"follow links to folders) and point {key} there")
    return out


def _weights(params: Params) -> list[str]:
    if params.model.pretrained != "imagenet" or params.model.backbone == "small_resnet":
        return []
    from metafgnet.models.pretrained import unavailable

    problem = unavailable(params.model.backbone)
    return [f"model.pretrained is imagenet but the {problem}"] if problem else []


def _disk(root: Path) -> list[str]:
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        return [f"only {free / 2**30:.1f} GiB free under {root.resolve()}; outputs, the DVC "
                f"cache and checkpoints need more (at least {MIN_FREE_BYTES / 2**30:.0f} GiB)"]
    return []


# SQLAlchemy 2's driver module per URL scheme (a plain ``postgresql://`` is psycopg 3)
DRIVERS = {"postgresql": ("psycopg", "pip install -e '.[postgres]'"),
           "postgresql+psycopg": ("psycopg", "pip install -e '.[postgres]'"),
           "postgresql+psycopg2": ("psycopg2", "pip install psycopg2-binary")}


def _drivers(params: Params) -> list[str]:
    """A database URL whose driver cannot be imported (Optuna and MLflow would fail at their
    first connection with a long ImportError)."""
    out = []
    for key, url in (("tune.storage", params.tune.storage),
                     ("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))):
        scheme = url.strip().split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in DRIVERS:
            continue
        module, fix = DRIVERS[scheme]
        try:
            importlib.import_module(module)
        except ImportError:
            out.append(f"{key} is a {scheme}:// URL but its driver `{module}` is not installed; "
                       f"{fix}")
    return out
