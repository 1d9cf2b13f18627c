"""Model files (``model.pt``) written by the stages: weights plus the provenance needed to
rebuild them. (Training checkpoints, which also hold optimizer and RNG state, are
:mod:`metafgnet.training.checkpointing`.)

Every file carries the state dict, the head sizes, the resolved params, the stage, ``seed``, the
digests of its inputs and ``provenance``: one sha256 over what made it (stage, architecture,
params, inputs; :func:`provenance_digest`). Nothing else: no commit, dirty flag, version, time,
host or path, so a file's bytes depend only on its inputs and the same inputs give the same file
on every commit (DVC then reuses every stage below one that reproduced its output). The commit
and dirty flag of the run that made a file are tags of its MLflow run (``git.commit``,
``git.dirty``: :mod:`metafgnet.tracking.run_tags`). Writes are atomic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from metafgnet.io import atomic_path
from metafgnet.models.metafgnet import MetaFGNet, build_model
from metafgnet.params import ModelParams


def provenance_digest(stage: str, arch: dict[str, Any], params: dict[str, Any],
                      inputs: dict[str, str]) -> str:
    """sha256 over what a model file is a function of, besides code: the stage, the
    architecture, the params sections the stage declares and the digests of its inputs
    (``{"data": prepared-data digest, "<input path>": sha256 of the file}``).

    The upstream model enters by its content digest, so provenance chains down the pipeline.
    Code is left out on purpose: code that reproduces the same weights gives the same file
    (content addressing: DVC stops re-running at the first identical output), and code that
    changes them changes the file anyway; which commit ran is in MLflow.
    """
    text = json.dumps({"stage": stage, "model": arch, "params": params, "inputs": inputs},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def save_model(path: str | Path, model: MetaFGNet, arch: dict[str, Any], params: dict[str, Any],
               stage: str, inputs: dict[str, str] | None = None, **extra: Any) -> None:
    """Write ``model`` (moved to CPU) with its provenance to ``path``.

    ``arch`` is the ``model`` params section the network was built from (carried from stage to
    stage, so later stages need not read it); ``params`` the sections the stage used;
    ``inputs`` the digests of what it read (:func:`provenance_digest`;
    :meth:`metafgnet.stages.context.StageContext.input_digests`). The bytes written depend on
    these arguments alone (module docstring).
    """
    inputs = dict(inputs or {})
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "num_target_classes": model.target_head.out_features,
        "num_source_classes": model.source_head.out_features,
        "model": dict(arch),
        "params": params,
        "stage": stage,
        "seed": params.get("seed"),
        "inputs": inputs,
        "provenance": provenance_digest(stage, dict(arch), params, inputs),
        **extra,
    }
    # saved through a buffer: given a path, torch.save names the archive's records after the
    # file, and the temporary name of an atomic write would make every run's bytes differ
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_model(path: str | Path,
               device: torch.device | str = "cpu") -> tuple[MetaFGNet, dict[str, Any]]:
    """Rebuild the model saved at ``path`` (no weight download: the file holds every weight).

    Loaded with ``torch.load(weights_only=True)``: a file holding anything but tensors and
    plain values (a pickled callable, as a crafted file from a shared remote could) is refused
    with ``ValueError`` naming it, before any of its code runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path} (run the stage that writes it)")
    try:  # tensors and plain values only: a model file never runs code when it is loaded
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"[^\n]*GLOBAL[^\n]*", str(exc))  # torch names the refused global
        raise ValueError(
            f"{path}: refused, not loaded: a model file holds tensors and plain values only, "
            f"and this one holds pickled code or objects ({found[0].strip() if found else exc})."
            " Do not use a model file from a source you do not trust; rebuild it with the "
            "stage that writes it.") from None
    except Exception as exc:  # truncated or not a torch file
        raise ValueError(f"{path}: not a readable model file ({exc})") from exc
    model_params = dataclasses.replace(ModelParams(**payload["model"]), pretrained="none")
    model = build_model(model_params, payload["num_target_classes"], payload["num_source_classes"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device), payload
