"""The search space of ``tune.space``: sampling a trial, applying it, the nested file layout.

A space maps dotted param keys (``meta.inner_lr``) to :class:`~metafgnet.tuning.schema.SearchDim`
(validated when the params are parsed: the key names a tunable param, type and range fit it).
A trial's values override those params; the trial budget (``tune.budget``) replaces
``meta.iterations`` and ``finetune.epochs`` and scales their milestones by the same factor, so a
short trial keeps the shape of the pipeline's schedule.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from metafgnet.params import Params, deep_merge, parse_params, to_dict
from metafgnet.tuning.schema import SearchDim, TuneParams

# The params sections a trial reads (the DVC stage `tune` declares the same).
SECTIONS = ("seed", "data", "meta", "select", "finetune", "runtime", "tune")


def suggest(trial: Any, space: dict[str, SearchDim]) -> dict[str, Any]:
    """Ask ``trial`` (an Optuna ``Trial`` or ``FixedTrial``) for a value of every dimension.

    Returns ``{dotted key: value}`` in the order of ``space``.
    """
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.type == "float":
            values[key] = trial.suggest_float(key, float(dim.low), float(dim.high), log=dim.log,
                                              step=dim.step)
        elif dim.type == "int":
            step = 1 if dim.step is None else int(dim.step)
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log,
                                            step=step)
        else:
            values[key] = trial.suggest_categorical(key, list(dim.choices))
    return values


def nest(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"meta.inner_lr": 0.01}`` -> ``{"meta": {"inner_lr": 0.01}}`` (the params layout)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def current_values(params: Params) -> dict[str, Any]:
    """The values the params hold now for every key of ``tune.space`` (the untuned point)."""
    return {key: getattr(getattr(params, key.split(".")[0]), key.split(".", 1)[1])
            for key in params.tune.space}


def trial_params(params: Params, values: dict[str, Any]) -> Params:
    """The params one trial trains with: ``params`` + the trial budget (``meta.iterations`` /
    ``finetune.epochs`` from ``tune.budget``, milestones scaled) + the trial's ``values``.

    Raises :class:`~metafgnet.params.ParamsError` when the combination is invalid.
    """
    from metafgnet.training import scaled_schedule  # torch: only when a trial is built

    budget = params.tune.budget
    meta = scaled_schedule(params.meta.iterations, params.meta.milestones,
                           budget.meta_iterations / params.meta.iterations)
    fine = scaled_schedule(params.finetune.epochs, params.finetune.milestones,
                           budget.finetune_epochs / params.finetune.epochs)
    budgeted = {"meta": dict(zip(("iterations", "milestones"), meta, strict=True)),
                "finetune": dict(zip(("epochs", "milestones"), fine, strict=True))}
    return parse_params(deep_merge(deep_merge(to_dict(params), budgeted), nest(values)))


def study_digest(params: Params) -> str:
    """What makes two invocations the same study: the space, the budget and every value the
    objective reads that the space does not override (seed, data, meta, select, finetune).

    Changing any of them under an existing ``tune.study_name`` is refused rather than mixing
    incomparable trials in one study; ``metafgnet tune apply`` (which writes only space keys)
    keeps the digest.
    """
    full = to_dict(params)
    reads = {"seed": full["seed"], "data": full["data"], "budget": full["tune"]["budget"],
             "space": full["tune"]["space"]}
    for section in ("meta", "select", "finetune"):
        reads[section] = {k: v for k, v in full[section].items()
                          if f"{section}.{k}" not in params.tune.space}
    text = json.dumps(reads, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(tune: TuneParams) -> dict[str, str]:
    """The space as flat strings, for trackers: ``{"space.meta.inner_lr": "float [0.001, 0.1] log"}``."""
    out = {}
    for key, dim in tune.space.items():
        if dim.type == "categorical":
            text = f"categorical {list(dim.choices)}"
        else:
            text = f"{dim.type} [{dim.low}, {dim.high}]" + (" log" if dim.log else "") + (
                f" step {dim.step}" if dim.step else "")
        out[f"space.{key}"] = text
    return out
