"""The ``tune`` section of ``params.yaml``: the search space, sampler, pruner and trial budget,
and the check that every ``tune.space`` key names a param the tune objective can vary.

:class:`TuneParams` is a section of :class:`metafgnet.params.Params` (validated with the other
sections, which call :func:`check_space_dim`); it imports no other tuning module, so the params
load without Optuna, torch or MLflow.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import TYPE_CHECKING, Annotated, Literal, get_args, get_origin, get_type_hints

from pydantic import Field, ValidationError, model_validator

from metafgnet.sections import NonNegInt, PosFloat, PosInt, section

if TYPE_CHECKING:
    from metafgnet.params import Params


@section
class SearchDim:
    """One dimension of the tuning search space, keyed in ``tune.space`` by the dotted param it
    overrides (``meta.inner_lr``). ``float`` / ``int``: ``low`` < ``high``, optional ``log``
    scale (``low`` > 0) or ``step``; ``categorical``: a list of ``choices``."""

    type: Literal["float", "int", "categorical"]
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: PosFloat | None = None
    choices: list[bool | int | float | str] | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs a non-empty list of choices")
            if self.low is not None or self.high is not None or self.log or self.step:
                raise ValueError("a categorical dimension takes only choices (no low/high/log/step)")
            return self
        if self.choices is not None:
            raise ValueError(f"choices only go with type categorical (type is {self.type})")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} dimension needs low and high")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got low {self.low})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna samples one or the other)")
        if self.type == "int":
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                if value is not None and float(value) != int(value):
                    raise ValueError(f"{name} of an int dimension must be an integer (got {value})")
        return self


def _default_space() -> dict[str, SearchDim]:
    return {
        "meta.inner_lr": SearchDim(type="float", low=1e-3, high=0.1, log=True),
        "meta.target_head_lr": SearchDim(type="float", low=0.01, high=0.5, log=True),
        "meta.backbone_lr": SearchDim(type="float", low=1e-3, high=0.05, log=True),
        "meta.aux_weight": SearchDim(type="float", low=0.1, high=2.0),
        "select.ratio": SearchDim(type="float", low=0.3, high=1.0),
    }


@section
class TuneSamplerParams:
    """Optuna sampler; every argument explicit (Optuna 5 changed the TPE defaults)."""

    kind: Literal["tpe", "random"] = "tpe"
    seed: NonNegInt = 0
    n_startup_trials: NonNegInt = 5  # random trials before TPE models the history
    n_ei_candidates: PosInt = 24
    multivariate: bool = True
    constant_liar: bool = True  # parallel workers avoid proposing what another is running


@section
class TunePruningParams:
    """Arguments of ``tune.pruner``; steps and resources are fine-tuning epochs."""

    n_startup_trials: NonNegInt = 2  # median: finished trials before any pruning
    n_warmup_steps: NonNegInt = 1  # median: epochs reported before a trial may be pruned
    interval_steps: PosInt = 1
    min_resource: PosInt = 1  # hyperband (max_resource = tune.budget.finetune_epochs)
    reduction_factor: Annotated[int, Field(ge=2)] = 3


@section
class TuneBudgetParams:
    """What one trial runs, in place of the pipeline's meta.iterations / finetune.epochs
    (their milestones are scaled by the same factor)."""

    meta_iterations: PosInt = 10
    finetune_epochs: PosInt = 5
    selection: bool = True  # also select auxiliary data and meta-train again on the selection


@section
class TuneParams:
    """Hyper-parameter search (``metafgnet tune``, :mod:`metafgnet.tuning`)."""

    enabled: bool = False  # the DVC stage `tune` runs the study only when true
    study_name: Annotated[str, Field(min_length=1)] = "metafgnet"
    storage: str = ""  # "": sqlite at <repo root>/optuna.db; a SQLAlchemy URL; journal:<path>
    n_trials: PosInt = 20  # COMPLETE + PRUNED trials, counted across invocations and workers
    timeout: NonNegInt = 0  # seconds per invocation before no new trial starts; 0: none
    workers: PosInt = 1
    sampler: TuneSamplerParams = dataclasses.field(default_factory=TuneSamplerParams)
    pruner: Literal["median", "hyperband", "none"] = "median"
    pruning: TunePruningParams = dataclasses.field(default_factory=TunePruningParams)
    heartbeat_interval: PosInt = 10  # seconds (RDB storages)
    grace_period: PosInt = 30  # seconds without heartbeat before a RUNNING trial becomes FAIL
    budget: TuneBudgetParams = dataclasses.field(default_factory=TuneBudgetParams)
    space: dict[str, SearchDim] = dataclasses.field(default_factory=_default_space)

    @model_validator(mode="after")
    def _coherent(self):
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must be > heartbeat_interval "
                             f"({self.heartbeat_interval})")
        if not self.space:
            raise ValueError("space is empty: declare at least one dimension")
        if self.storage.strip() and not ("://" in self.storage or
                                         self.storage.startswith("journal:")):
            raise ValueError(f"storage {self.storage!r} is neither a database URL "
                             "(sqlite:///..., postgresql://...) nor journal:<path>")
        return self


# What the tune objective reads, and the keys its budget sets (so they cannot be searched).
TUNABLE_SECTIONS = ("meta", "select", "finetune")
_BUDGET_KEYS = {"meta.iterations": "meta_iterations", "meta.milestones": "meta_iterations",
                "finetune.epochs": "finetune_epochs", "finetune.milestones": "finetune_epochs"}
_SELECT_VALUES = {"select.ratio": "ratio", "select.threshold": "threshold", "select.topk": "topk"}


def check_space_dim(params: Params, key: str, dim: SearchDim) -> str | None:
    """The problem with ``tune.space.<key>`` given the other sections, or None."""
    section, _, name = key.partition(".")
    tunable = [f"{s}.{f.name}" for s in TUNABLE_SECTIONS
               for f in dataclasses.fields(getattr(params, s))]
    if key not in tunable:
        other = [f"{f.name}.{g.name}" for f in dataclasses.fields(params)
                 if dataclasses.is_dataclass(getattr(params, f.name))
                 for g in dataclasses.fields(getattr(params, f.name))]
        if key in other:
            return f"not read by the tune objective (tunable sections: {', '.join(TUNABLE_SECTIONS)})"
        close = difflib.get_close_matches(key, tunable, n=1, cutoff=0.6)
        return "unknown param; " + (f"did you mean {close[0]}?" if close else
                                    f"tunable sections: {', '.join(TUNABLE_SECTIONS)}")
    if key in _BUDGET_KEYS:
        return f"set by tune.budget.{_BUDGET_KEYS[key]}, not tunable"
    hint = get_type_hints(type(getattr(params, section)))[name]
    base = get_origin(hint)
    kinds = {bool: "categorical", int: "int", float: "float"}
    if base is list:
        return "a list param cannot be tuned"
    expected = "categorical" if base is Literal or hint is str else kinds.get(hint)
    if dim.type != "categorical" and dim.type != expected:
        kind = (f"one of {', '.join(map(repr, get_args(hint)))}" if base is Literal
                else getattr(hint, "__name__", str(hint)))
        return f"type {dim.type} does not fit this param ({kind}); use type {expected}"
    if section == "select" and key in _SELECT_VALUES:
        if not params.tune.budget.selection:
            return "has no effect unless tune.budget.selection is true"
        if params.select.criterion != _SELECT_VALUES[key] and "select.criterion" not in params.tune.space:
            return f"has no effect with select.criterion {params.select.criterion!r}"
    values = ([("choice", c) for c in dim.choices or ()] if dim.type == "categorical"
              else [("low", dim.low), ("high", dim.high)])
    for what, value in values:
        if dim.type == "int":
            value = int(value)
        try:
            dataclasses.replace(getattr(params, section), **{name: value})
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            return f"{what} {value!r} is not a valid {key} ({reason})"
    return None
