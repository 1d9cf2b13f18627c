"""Logging PyTorch models to MLflow and registering the best one under an alias.

Choices, and why:

* ``serialization_format="pickle"``: MLflow 3 defaults to ``"pt2"`` (``torch.export``), which
  needs a traceable forward and reloads a ``GraphModule`` without the model's own methods (heads,
  feature extractor). Pickle reloads the original ``nn.Module`` class as it is. The price:
  loading runs pickle code (load only models from your own tracker) and ``metafgnet`` must be
  importable where the model is loaded.
* explicit ``pip_requirements`` pinned from the installed torch/torchvision/cloudpickle: without
  them MLflow infers requirements by re-importing the model in a subprocess on every log,
  which dwarfs writing the model; with them a log only writes files (after one-off lazy imports
  in a fresh process, see :func:`warm_up`).
* signature and input example from one sample of the caller's input and the model's output on
  it, computed in eval mode on a CPU copy, so the logged model also serves on CPU.
* registry: aliases, not the deprecated stages. ``latest`` and ``v<N>`` are reserved by MLflow.
  Every registration makes a new version; ``champion`` moves to it only when its validation
  top-1 beats the champion's (:func:`register_model`), otherwise it becomes ``challenger``.
* metrics of a logged model (MLflow 3 ``LoggedModel``): :func:`model_metrics` links the scores
  a stage measured on it (``val_top1``, ...) to it, so ``mlflow.get_logged_model(id).metrics``
  and the Models tab show them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import re
import tempfile
from importlib import metadata
from typing import Any

from metafgnet.tracking.uri import TrackingError

SERIALIZATION_FORMAT = "pickle"
DEFAULT_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"  # a registered version that did not beat the champion
SCORE_METRIC = "val_top1"  # what the champion rule compares (higher is better)
_PINNED = ("torch", "torchvision", "cloudpickle")


def _not_pickle_warning(record: logging.LogRecord) -> bool:
    """Logging filter: MLflow's per-call warning about pickle, a documented choice here, drops."""
    return not record.getMessage().startswith("Saving pytorch model by Pickle")


def pip_requirements() -> list[str]:
    """``name==version`` pins of the installed packages a pickled model needs (dependencies of
    this package and of MLflow: always installed)."""
    # local version labels (+cu128) are not on PyPI
    return [f"{name}=={metadata.version(name).split('+', 1)[0]}" for name in _PINNED]


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
    logging.getLogger("mlflow.pytorch").addFilter(_not_pickle_warning)  # added once, for good
    return {"serialization_format": SERIALIZATION_FORMAT, "pip_requirements": pip_requirements(),
            "signature": infer_signature(example, _as_numpy(output)), "input_example": example}


def log_model(model, name: str, input_example: Any, *, run_id: str, step: int = 0):
    """Log ``model`` to run ``run_id`` as ``name``; returns MLflow's ``ModelInfo``.

    ``input_example``: a batch (tensor or array) of model inputs; its first sample is stored as
    the example and, with the model's output on it, gives the signature. ``step``: the model's
    step in the run (:meth:`metafgnet.tracking.runs.StageRun.log_model` says which).
    """
    import mlflow.pytorch

    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    cpu_model = model if on_cpu else copy.deepcopy(model).cpu()
    was_training = cpu_model.training
    cpu_model.eval()
    try:
        return mlflow.pytorch.log_model(
            cpu_model, name=name, step=step,
            run_id=run_id,  # passed on to Model.log: no active (thread-local) run needed
            **_flavor_kwargs(cpu_model, input_example, name),
        )
    finally:
        cpu_model.train(was_training)


def warm_up() -> None:
    """Save a tiny model to a temporary folder exactly as :func:`log_model` would, so that the
    first real log of a process does not pay MLflow's one-off lazy work (imports, the scan of
    installed packages), then discard it. Nothing is recorded."""
    import mlflow.pytorch
    import torch

    tiny = torch.nn.Linear(2, 2).eval()
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.pytorch.save_model(tiny, f"{tmp}/model",
                                  **_flavor_kwargs(tiny, torch.zeros(1, 2), "warm-up"))


def check_alias(alias: str) -> None:
    """Reject aliases MLflow reserves, before anything is registered."""
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise TrackingError(
            f"model alias {alias!r} is reserved by MLflow ('latest' and 'v<N>'); use e.g. "
            f"{DEFAULT_ALIAS!r}"
        )


def model_metrics(model_id: str, metrics: dict[str, float], *, timestamp_ms: int, step: int,
                  datasets: dict[str, tuple[str, str]] | None = None) -> list:
    """``Metric`` entities of ``metrics`` linked to the logged model ``model_id`` (and, per key in
    ``datasets``, to the ``(name, digest)`` of the dataset it was measured on), for
    ``log_batch`` on the run that logged the model: MLflow 3 records them as run metrics *and*
    as the model's metrics."""
    from mlflow.entities import Metric

    datasets = datasets or {}
    return [Metric(key, float(value), timestamp_ms, step, model_id=model_id,
                   dataset_name=datasets[key][0] if key in datasets else None,
                   dataset_digest=datasets[key][1] if key in datasets else None)
            for key, value in metrics.items()]


@dataclasses.dataclass(frozen=True)
class Decision:
    """What :func:`register_model` did with a new version."""

    alias: str  # the alias the new version got: the champion alias or CHALLENGER_ALIAS
    score: float | None  # the new version's SCORE_METRIC
    champion_version: int | None  # the champion before (None: there was none)
    champion_score: float | None

    @property
    def promoted(self) -> bool:
        return self.alias != CHALLENGER_ALIAS

    def describe(self) -> str:
        new = _fmt(self.score)
        if self.champion_version is None:
            return f"{SCORE_METRIC} {new}, no champion before"
        return (f"{SCORE_METRIC} {new} vs champion v{self.champion_version} "
                f"{_fmt(self.champion_score)}")


def _fmt(score: float | None) -> str:
    return "unknown" if score is None else f"{score:.4f}"


def version_score(client, version) -> float | None:
    """:data:`SCORE_METRIC` of a registered version: its tag of that name (set at
    registration), else the latest (by step, then time) value of that metric linked to its
    logged model; None when neither exists (a version registered before this rule, or a model
    logged without it)."""
    tag = (version.tags or {}).get(SCORE_METRIC)
    if tag is not None:
        with contextlib.suppress(ValueError):
            return float(tag)
    model_id = version.model_id or _model_id(version.source or "")
    if not model_id:
        return None
    values = [m for m in client.get_logged_model(model_id).metrics or [] if m.key == SCORE_METRIC]
    if not values:
        return None
    value = max(values, key=lambda m: (m.step, m.timestamp)).value
    return None if math.isnan(value) else value


def _model_id(model_uri: str) -> str | None:
    """``m-...`` of a ``models:/m-...`` URI (a logged model), else None: the store does not
    always fill a version's ``model_id``."""
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)/?", model_uri)
    return match.group(1) if match else None


def register_model(client, model_uri: str, name: str, alias: str = DEFAULT_ALIAS,
                   tags: dict[str, str] | None = None):
    """Register ``model_uri`` as a new version of ``name``; returns ``(ModelVersion, Decision)``.

    The champion rule: ``alias`` (``champion``) moves to the new version when there is no
    champion yet, or when the new version's :data:`SCORE_METRIC` (:func:`version_score`;
    validation top-1) is strictly higher than the champion's, or the champion has none.
    Otherwise (lower, equal, or the new version has no score) the champion stays and the new
    version gets ``challenger``. The score is kept as the version's tag of that name. ``models:/<name>@<alias>``
    loads the champion. Callers serialise concurrent registrations (see the recorder).
    """
    import mlflow

    check_alias(alias)
    version = mlflow.register_model(model_uri, name, tags=tags)  # creates ``name`` if need be
    score = version_score(client, version)
    if score is not None:
        client.set_model_version_tag(name, version.version, SCORE_METRIC, repr(score))
    champion, champion_score = None, None
    if (held_by := client.get_registered_model(name).aliases.get(alias)) is not None:
        champion = client.get_model_version(name, str(held_by))
        champion_score = version_score(client, champion)
    promoted = champion is None or (score is not None and (
        champion_score is None or score > champion_score))
    chosen = alias if promoted else CHALLENGER_ALIAS
    client.set_registered_model_alias(name, chosen, version.version)
    return version, Decision(chosen, score, int(champion.version) if champion else None,
                             champion_score)
