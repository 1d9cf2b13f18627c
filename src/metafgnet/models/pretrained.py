"""ImageNet weights for the torchvision backbones, offline-safe.

No machine of this project reaches the internet. The weights file (torchvision's, under its own
name) is read from ``data/external/weights/`` in the repository, a DVC dependency of the
``pretrain`` stage, or else from the torch hub cache (``$TORCH_HOME/hub/checkpoints/``,
torchvision's own location). When it is in neither we probe the download host with a short
timeout and fail at once with a message that says where to put the file, instead of letting
``urllib`` hang. ``METAFGNET_NO_DOWNLOAD=1`` skips the probe: no download is even tried
(unrelated to ``tracking.offline``, which is about the tracking server).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from metafgnet.errors import UserError

PROBE_TIMEOUT_S = 3.0
EXTERNAL = Path("data/external/weights")  # relative to the repository root, a stage's cwd


class PretrainedWeightsUnavailable(RuntimeError, UserError):
    """ImageNet weights are neither cached nor downloadable from this machine."""


def _weights(arch: str) -> Any:
    import torchvision

    return torchvision.models.get_model_weights(arch).DEFAULT


def cache_path(arch: str) -> Path:
    """Where ``arch``'s ImageNet weights are read from: ``data/external/weights/<file>`` when
    it is there, else torchvision's own cache (where a download would go)."""
    name: str = os.path.basename(urlparse(_weights(arch).url).path)
    external = EXTERNAL / name
    return external if external.is_file() else Path(torch.hub.get_dir()) / "checkpoints" / name


def _can_reach(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the URL's host opens within ``timeout`` seconds."""
    if os.environ.get("METAFGNET_NO_DOWNLOAD", "") not in ("", "0"):
        return False
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable(arch: str) -> str | None:
    """Why ``arch``'s ImageNet weights cannot be had now (neither cached nor downloadable, with
    the fix), or None when they can."""
    weights, path = _weights(arch), cache_path(arch)
    if path.is_file() or _can_reach(weights.url):
        return None
    return (f"ImageNet {arch} weights are neither in {EXTERNAL} nor in the torch hub cache "
            f"({path}) and {urlparse(weights.url).hostname} cannot be reached (offline). Copy "
            f"{weights.url} to {EXTERNAL / path.name} (or set TORCH_HOME to a cache that has "
            "it), or set model.pretrained: none.")


def load_imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The ``weights=DEFAULT`` ImageNet state dict of torchvision's ``arch`` (with ``fc``)."""
    if problem := unavailable(arch):
        raise PretrainedWeightsUnavailable(problem)
    weights, path = _weights(arch), cache_path(arch)
    try:
        return torch.hub.load_state_dict_from_url(weights.url, model_dir=str(path.parent),
                                                  progress=False, check_hash=not path.is_file())
    except OSError as exc:  # URLError is an OSError
        raise PretrainedWeightsUnavailable(
            f"could not download ImageNet weights for {arch} from {weights.url} to {path}: {exc}"
        ) from exc
