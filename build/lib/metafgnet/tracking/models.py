"""Logging PyTorch models to MLflow and registering the best one under an alias.

Choices, each measured on this project's machines:

* ``serialization_format="pickle"``: MLflow 3 defaults to ``"pt2"`` (``torch.export``), which
  needs a traceable forward and reloads a ``GraphModule`` without the model's own methods (heads,
  feature extractor). Pickle reloads the original ``nn.Module`` class in milliseconds. The price:
  loading runs pickle code (load only models from your own tracker) and ``metafgnet`` must be
  importable where the model is loaded.
* explicit ``pip_requirements`` pinned from the installed torch/torchvision/cloudpickle: without
  them MLflow infers requirements by re-importing the model (9-28 s); with them a log takes
  about 0.1 s (plus a one-off ~1 s of lazy imports in a fresh process).
* signature and input example from one sample of the caller's input and the model's output on
  it, computed in eval mode on a CPU copy, so the logged model also serves on CPU.
* registry: aliases, not the deprecated stages. ``latest`` and ``v<N>`` are reserved by MLflow.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import tempfile
from importlib import metadata
from typing import Any

from metafgnet.tracking.uri import TrackingError

SERIALIZATION_FORMAT = "pickle"
DEFAULT_ALIAS = "champion"
_PINNED = ("torch", "torchvision", "cloudpickle")


class _PickleWarningFilter(logging.Filter):
    """Drop MLflow's per-call warning about pickle: the format is a documented choice here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Saving pytorch model by Pickle")


_FILTER = _PickleWarningFilter()


def pip_requirements() -> list[str]:
    """``name==version`` pins of the installed packages a pickled model needs."""
    pins = []
    for name in _PINNED:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        pins.append(f"{name}=={version.split('+', 1)[0]}")  # local labels (+cu128) are not on PyPI
    return pins


def _as_numpy(x: Any):
    import numpy as np
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _flavor_kwargs(cpu_model, input_example: Any, name: str) -> dict:
    """The arguments every save of a model gets: format, pinned requirements, signature and
    input example (the first sample of ``input_example``), from ``cpu_model`` in eval mode."""
    import torch
    from mlflow.models import infer_signature

    example = _as_numpy(input_example)[:1]
    with torch.no_grad():
        output = cpu_model(torch.from_numpy(example))
    if not isinstance(output, torch.Tensor):
        raise TrackingError(
            f"log_model({name!r}): the model returned {type(output).__name__}; a logged "
            "model must return one tensor (wrap it to return the logits)"
        )
    return {"serialization_format": SERIALIZATION_FORMAT, "pip_requirements": pip_requirements(),
            "signature": infer_signature(example, _as_numpy(output)), "input_example": example}


@contextlib.contextmanager
def _quiet_pickle_warning():
    pytorch_logger = logging.getLogger("mlflow.pytorch")
    pytorch_logger.addFilter(_FILTER)
    try:
        yield
    finally:
        pytorch_logger.removeFilter(_FILTER)


def log_model(model, name: str, input_example: Any, *, run_id: str, step: int = 0):
    """Log ``model`` to run ``run_id`` as ``name``; returns MLflow's ``ModelInfo``.

    ``input_example``: a batch (tensor or array) of model inputs; its first sample is stored as
    the example and, with the model's output on it, gives the signature.
    """
    import mlflow.pytorch

    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    cpu_model = model if on_cpu else copy.deepcopy(model).cpu()
    was_training = cpu_model.training
    cpu_model.eval()
    try:
        kwargs = _flavor_kwargs(cpu_model, input_example, name)
        with _quiet_pickle_warning():
            return mlflow.pytorch.log_model(
                cpu_model, name=name, step=step,
                run_id=run_id,  # passed on to Model.log: no active (thread-local) run needed
                **kwargs,
            )
    finally:
        cpu_model.train(was_training)


def warm_up() -> None:
    """Save a tiny model to a temporary folder exactly as :func:`log_model` would, so that the
    first real log of a process does not pay MLflow's one-off lazy work (imports, the scan of
    installed packages; about 2 s here), then discard it. Nothing is recorded."""
    import mlflow.pytorch
    import torch

    tiny = torch.nn.Linear(2, 2).eval()
    with tempfile.TemporaryDirectory() as tmp, _quiet_pickle_warning():
        mlflow.pytorch.save_model(tiny, f"{tmp}/model",
                                  **_flavor_kwargs(tiny, torch.zeros(1, 2), "warm-up"))


def check_alias(alias: str) -> None:
    """Reject aliases MLflow reserves, before anything is registered."""
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise TrackingError(
            f"model alias {alias!r} is reserved by MLflow ('latest' and 'v<N>'); use e.g. "
            f"{DEFAULT_ALIAS!r}"
        )


def register_model(client, model_uri: str, name: str, alias: str = DEFAULT_ALIAS,
                   tags: dict[str, str] | None = None):
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it.

    Returns the ``ModelVersion``; ``models:/<name>@<alias>`` then loads it.
    """
    import mlflow

    check_alias(alias)
    version = mlflow.register_model(model_uri, name, tags=tags)
    client.set_registered_model_alias(name, alias, version.version)
    return version
