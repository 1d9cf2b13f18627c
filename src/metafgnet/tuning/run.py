"""One invocation of ``metafgnet tune``: open (or resume) the study, run the workers, write the
outputs, record it all under one MLflow parent run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from metafgnet.credentials import redact_text
from metafgnet.params import Params, deep_merge, parse_params, to_dict
from metafgnet.tuning.mlflow_log import finish_parent, start_parent
from metafgnet.tuning.report import write_outputs
from metafgnet.tuning.storage import resolve_url
from metafgnet.tuning.study import fail_running, open_study
from metafgnet.tuning.workers import run_workers, specs_for

log = logging.getLogger("metafgnet.tuning")


def with_overrides(params: Params, **tune: Any) -> Params:
    """``params`` with ``tune.<key>`` replaced for every non-None keyword (CLI overrides);
    validated like the file."""
    given = {k: v for k, v in tune.items() if v is not None}
    if not given:
        return params
    return parse_params(deep_merge(to_dict(params), {"tune": given}))


def run_tune(params: Params, *, out: Path, data_dir: Path, init: Path,
             worker_id: str | None = None, fail_running_first: bool = False) -> dict:
    """Resume-or-create the study of ``params.tune``, run ``tune.workers`` workers until the
    budget is complete (or the timeout passes), write ``out`` and return the study summary.

    ``data_dir``: the prepared manifests; ``init``: the pretrained model file.
    """
    if not Path(init).is_file():
        raise FileNotFoundError(f"pretrained model {init} not found: run `dvc repro pretrain` "
                                "first (or pass --init)")
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"prepared data {data_dir} not found: run `dvc repro prepare` "
                                "first (or pass --data)")
    tune = params.tune
    url = resolve_url(tune.storage)
    study = open_study(params, url)
    if fail_running_first:
        log.warning("marked %d RUNNING trial(s) FAIL (--fail-running)", fail_running(study))
    shown = redact_text(url)
    log.info("study %r in %s: %d trial(s) so far, budget %d, %d worker(s)", tune.study_name,
             shown, len(study.get_trials(deepcopy=False)), tune.n_trials, tune.workers)
    tracker = start_parent(params, tune.study_name, shown, tune.workers)
    specs = specs_for(params, url, workers=tune.workers, data_dir=str(data_dir), init=str(init),
                      tracker=tracker, study=study, explicit_id=worker_id)
    try:
        run_workers(specs)
        study = open_study(params, url)  # a fresh view: the workers' trials
        summary = write_outputs(study, params, shown, Path(out))
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            finish_parent(tracker, {}, [], status=status)
        except Exception as err:  # keep the original error
            log.error("could not close the MLflow parent run: %s", err)
        raise
    states = summary["states"]
    metrics = {"best_value": summary["best"]["value"], "best_trial": summary["best"]["number"],
               **{f"n_{s.lower()}": states.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL")}}
    finish_parent(tracker, metrics, sorted(Path(out).iterdir()))
    log.info("best trial %d: validation top-1 %.4f; wrote %s", summary["best"]["number"],
             summary["best"]["value"], out)
    return summary


def report_only(params: Params, out: Path) -> dict:
    """Rewrite ``out`` from the stored study without running any trial."""
    url = resolve_url(params.tune.storage)
    return write_outputs(open_study(params, url), params, redact_text(url), Path(out))
