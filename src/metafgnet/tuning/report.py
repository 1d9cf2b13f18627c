"""The outputs of a study (the DVC stage ``tune``'s out folder; each file written atomically,
files of an earlier run that this one does not write removed):

* ``best_params.yaml``: the best trial's values in the params layout
  (``meta: {inner_lr: ...}``), ready for ``metafgnet tune apply`` or as a DVC params file;
* ``summary.json`` / ``summary.md``: budget, trial counts per state, the best trial, every trial;
* ``history.png``: optimisation history; ``intermediate.png``: every trial's validation
  accuracy per fine-tuning epoch (what the pruner saw); ``parallel.png``: parallel coordinates
  and ``slice.png``: value against each parameter (one completed trial or more);
  ``importance.png``: parameter importances (two or more). A plot that cannot be drawn is named
  in the summary with the reason. All are rendered offline with
  ``optuna.visualization.matplotlib`` (Agg backend). ``optuna-dashboard`` serves the same study
  live (``make dashboard``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import yaml

from metafgnet.io import atomic_path, write_json, write_text
from metafgnet.params import Params, to_dict
from metafgnet.tuning.space import current_values, describe, nest

log = logging.getLogger("metafgnet.tuning")

BEST = "best_params.yaml"
PLOTS = ("history.png", "intermediate.png", "parallel.png", "slice.png", "importance.png")
OWNED = (BEST, "summary.json", "summary.md", *PLOTS)


def _remove_stale(out: Path, written: set[str]) -> None:
    """Outputs are rewritten whole: drop this step's files that this run did not write (an
    importance plot from an earlier, larger study, ...). Other files are left alone."""
    for name in set(OWNED) - written:
        (out / name).unlink(missing_ok=True)


def _best_yaml(values: dict[str, Any], header: list[str]) -> str:
    body = yaml.safe_dump(nest(values), sort_keys=False)
    return "".join(f"# {line}\n" for line in header) + body


def summarize(study, params: Params, storage: str) -> dict:
    """The study as a JSON-able dict (the source of ``summary.json`` / ``summary.md``)."""
    from metafgnet.tuning.study import OVERFLOW_ATTR, counts

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    return {
        "study_name": study.study_name, "storage": storage, "direction": "maximize",
        "metric": "best validation top-1 over the fine-tuning epochs (validation split)",
        "n_trials_budget": params.tune.n_trials, "states": counts(study),
        "budget": to_dict(params.tune.budget), "space": describe(params.tune),
        "best": None if best is None else {"number": best.number, "value": best.value,
                                           "params": best.params},
        "trials": [{"number": t.number, "state": t.state.name, "value": t.value,
                    "params": t.params,
                    "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                    "duration_s": t.duration.total_seconds() if t.duration else None,
                    "budget_overflow": bool(t.user_attrs.get(OVERFLOW_ATTR, False))}
                   for t in trials],
    }


def markdown(summary: dict) -> str:
    lines = [f"# Study `{summary['study_name']}`", "",
             f"Metric: {summary['metric']}, maximised. Budget: {summary['n_trials_budget']} "
             "trials (COMPLETE + PRUNED).", "",
             "States: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["states"].items())), ""]
    best = summary["best"]
    if best:
        lines += [f"Best: trial {best['number']}, value {best['value']:.4f}", ""]
        lines += [f"- `{k}` = {v!r}" for k, v in best["params"].items()] + [""]
    names = [k.removeprefix("space.") for k in summary["space"]]
    lines += ["| trial | state | value | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    for row in summary["trials"]:
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        cells = [f"{row['params'][n]:.4g}" if isinstance(row["params"].get(n), float)
                 else str(row["params"].get(n, "")) for n in names]
        lines.append(f"| {row['number']} | {row['state']} | {value} | " + " | ".join(cells) + " |")
    if summary.get("notes"):
        lines += ["", *[f"Note: {n}" for n in summary["notes"]]]
    return "\n".join(lines) + "\n"


def _plots(study, out: Path) -> tuple[list[str], set[str]]:
    """Render :data:`PLOTS` (atomic writes); return notes for plots that could not be made and
    the names written."""
    import optuna
    from optuna.visualization import matplotlib as ovm

    from metafgnet.reporting.plots import plt  # the Agg backend

    notes, written = [], set()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # e.g. "importances will be equal"
        for name, plot, needs in (("history.png", ovm.plot_optimization_history, 1),
                                  ("intermediate.png", ovm.plot_intermediate_values, 1),
                                  ("parallel.png", ovm.plot_parallel_coordinate, 1),
                                  ("slice.png", ovm.plot_slice, 1),
                                  ("importance.png", ovm.plot_param_importances, 2)):
            if len(complete) < needs:
                notes.append(f"{name} not drawn: needs >= {needs} completed trials, "
                             f"the study has {len(complete)}")
                continue
            try:
                axes = plot(study)  # one Axes, or an array of them (slice: one per param)
                fig = getattr(axes, "figure", None) or axes.flat[0].figure
                panels = getattr(axes, "size", 1)
                fig.set_size_inches(max(8.0, 3.5 * panels + 2), 5)
                if panels == 1:
                    fig.tight_layout()
                with atomic_path(out / name) as tmp:
                    fig.savefig(tmp, dpi=100, format="png")
                written.add(name)
            except Exception as exc:  # e.g. importances of a constant history
                notes.append(f"{name} not drawn: {type(exc).__name__}: {exc}")
            finally:
                plt.close("all")
    return notes, written


def write_outputs(study, params: Params, storage: str, out: Path) -> dict:
    """Write the study's outputs to ``out`` (replaced whole); return the summary.

    Raises ``RuntimeError`` when no trial completed (nothing to call best).
    """
    summary = summarize(study, params, storage)
    best = summary["best"]
    if best is None:
        raise RuntimeError(f"study {study.study_name!r} has no COMPLETE trial yet "
                           f"(states: {summary['states']}); raise tune.n_trials or relax "
                           "tune.pruning, and run `metafgnet tune` again")
    out.mkdir(parents=True, exist_ok=True)
    summary["notes"], written = _plots(study, out)
    header = [f"best trial {best['number']} of study {study.study_name!r}: validation top-1 "
              f"{best['value']:.4f} on the tune budget",
              "merge into params.yaml: metafgnet tune apply"]
    write_text(out / BEST, _best_yaml(best["params"], header))
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", markdown(summary))
    _remove_stale(out, written | {BEST, "summary.json", "summary.md"})
    return summary


def write_untuned(params: Params, out: Path) -> None:
    """The stage's outputs when ``tune.enabled`` is false: the CURRENT values of the space keys
    (so ``best_params.yaml`` always exists and applying it changes nothing)."""
    write_text(out / BEST, _best_yaml(current_values(params), [
        "tune.enabled is false: these are the current params values, not tuned ones",
        "run `metafgnet tune` (or set tune.enabled: true and `dvc repro tune`)"]))
    write_json(out / "summary.json", {"enabled": False, "study_name": params.tune.study_name,
                                      "space": describe(params.tune)})
    write_text(out / "summary.md", "# Tuning disabled\n\n`tune.enabled` is false; "
               "`best_params.yaml` holds the current values.\n")
    _remove_stale(out, {BEST, "summary.json", "summary.md"})
