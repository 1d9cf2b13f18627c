"""Model files (``model.pt``) written by the stages: weights plus the provenance needed to
rebuild them. (Training checkpoints, which also hold optimizer and RNG state, are
:mod:`metafgnet.training.checkpointing`.)

Every file carries the state dict, the head sizes, the resolved params, the stage, ``seed`` and
the git revision (every checkpoint carries model, step, params, revision and seed).
Writes are atomic.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch

from metafgnet import __version__
from metafgnet.io import atomic_path
from metafgnet.models.metafgnet import MetaFGNet, build_model
from metafgnet.params import ModelParams
from metafgnet.provenance import git_dirty, git_revision


def save_model(path: str | Path, model: MetaFGNet, arch: dict, params: dict, stage: str,
               **extra: Any) -> None:
    """Write ``model`` (moved to CPU) with its provenance to ``path``.

    ``arch`` is the ``model`` params section the network was built from (carried from stage to
    stage, so later stages need not read it); ``params`` the sections the stage used.
    """
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "num_target_classes": model.target_head.out_features,
        "num_source_classes": model.source_head.out_features,
        "model": dict(arch),
        "params": params,
        "stage": stage,
        "seed": params.get("seed"),
        "git_revision": git_revision(),
        "git_dirty": git_dirty(),
        "version": __version__,
        **extra,
    }
    # saved through a buffer: given a path, torch.save names the archive's records after the
    # file, and the temporary name of an atomic write would make every run's bytes differ
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[MetaFGNet, dict]:
    """Rebuild the model saved at ``path`` (no weight download: the file holds every weight)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path} (run the stage that writes it)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or not a torch file
        raise ValueError(f"{path}: not a readable model file ({exc})") from exc
    model_params = dataclasses.replace(ModelParams(**payload["model"]), pretrained="none")
    model = build_model(model_params, payload["num_target_classes"], payload["num_source_classes"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device), payload
