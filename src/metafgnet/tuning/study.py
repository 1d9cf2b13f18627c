"""Running a study: sampler, pruner, the trial budget across invocations and worker processes.

Budget rule: ``tune.n_trials`` counts COMPLETE + PRUNED trials of the study, whoever ran them
and in how many invocations. Each worker loops:

1. fail stale trials (heartbeat; RDB storages) and close their MLflow runs;
2. stop when COMPLETE + PRUNED >= ``n_trials`` or the invocation's ``timeout`` has passed;
3. when the budget is taken but trials still RUNNING elsewhere, wait: they finish, or their
   worker died and the heartbeat turns them FAIL, which frees the slot for this worker;
4. otherwise run ONE trial (``study.optimize(n_trials=1)``, which keeps the heartbeat). The trial
   first claims its slot: when COMPLETE + PRUNED + RUNNING trials numbered below it already fill
   the budget (two workers asked at the same instant), it ends FAIL with the user attribute
   ``budget_overflow`` before doing any work. So exactly ``n_trials`` trials finish and none runs
   twice; a killed worker's trial ends FAIL and is not counted.

This is ``MaxTrialsCallback(n_trials, states=(COMPLETE, PRUNED))`` made exact for parallel
workers (the callback only stops a worker after its trial, so N workers can overshoot by N-1).

Worker processes and their sampler seeds: :mod:`metafgnet.tuning.workers`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter

from metafgnet.credentials import redact_text
from metafgnet.params import Params
from metafgnet.progress import Progress
from metafgnet.tuning.mlflow_log import TrialLogger
from metafgnet.tuning.schema import TuneParams
from metafgnet.tuning.space import study_digest
from metafgnet.tuning.storage import open_storage

log = logging.getLogger("metafgnet.tuning")

DIGEST_ATTR = "metafgnet.digest"
OVERFLOW_ATTR = "budget_overflow"
WORKER_ATTR = "worker"
COUNTED = ("COMPLETE", "PRUNED")


class BudgetReached(Exception):
    """This trial's slot was taken by another worker: it ends FAIL before doing any work."""


class StudyMismatch(ValueError):
    """The stored study was created with another search space, budget or base params."""


def make_sampler(tune: TuneParams, seed: int):
    """The sampler of ``tune.sampler`` with every argument explicit (Optuna 5 changed TPE's)."""
    import optuna

    s = tune.sampler
    if s.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=s.n_startup_trials, n_ei_candidates=s.n_ei_candidates,
            multivariate=s.multivariate, constant_liar=s.constant_liar)


def make_pruner(tune: TuneParams):
    """``tune.pruner`` with ``tune.pruning``; steps are fine-tuning epochs."""
    import optuna

    p = tune.pruning
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials,
                                           n_warmup_steps=p.n_warmup_steps,
                                           interval_steps=p.interval_steps)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource,
                                              max_resource=tune.budget.finetune_epochs,
                                              reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def open_study(params: Params, url: str, *, sampler=None):
    """Create the study or load it (``load_if_exists``), refusing a mismatched one."""
    import optuna

    tune = params.tune
    study = optuna.create_study(storage=open_storage(url, tune), study_name=tune.study_name,
                                direction="maximize", load_if_exists=True, sampler=sampler,
                                pruner=make_pruner(tune))
    digest = study_digest(params)
    stored = study.user_attrs.get(DIGEST_ATTR)
    if stored is None:
        study.set_user_attr(DIGEST_ATTR, digest)
    elif stored != digest:
        raise StudyMismatch(
            f"study {tune.study_name!r} in {redact_text(url)} was created with another search "
            "space, budget "
            "or base params (seed, data, meta, select, finetune outside the space); set a new "
            "tune.study_name (or --study-name) to start a fresh study, or delete the old one "
            f"(optuna delete-study --study-name {tune.study_name} --storage <url>)")
    return study


def counts(study) -> dict[str, int]:
    """Number of trials per state name."""
    return dict(Counter(trial.state.name for trial in study.get_trials(deepcopy=False)))


def fail_stale(study) -> None:
    """Mark trials without heartbeat for ``grace_period`` FAIL (no-op without heartbeats)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_running(study) -> int:
    """Mark every RUNNING trial FAIL: for journal storages (no heartbeat) after a worker was
    killed. Only safe when no worker is running."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in running:
        study.tell(trial.number, state=TrialState.FAIL)
    return len(running)


def _claim(trial, n_trials: int) -> None:
    """Raise :class:`BudgetReached` when earlier counted or running trials fill the budget."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    ahead = sum(1 for t in trial.study.get_trials(deepcopy=False, states=states)
                if t.number < trial.number)
    if ahead >= n_trials:
        trial.set_user_attr(OVERFLOW_ATTR, True)
        raise BudgetReached(f"trial {trial.number}: the budget of {n_trials} trials is taken")


def _safe(fn, *args, **kwargs) -> None:
    """Record-keeping that must not mask the trial's own outcome."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # MLflow client errors of several types
        log.error("could not record a trial in MLflow: %s", exc)


def _tracked(objective, logger: TrialLogger, worker: str, n_trials: int):
    """``objective`` wrapped with the budget claim and the trial's MLflow child run."""
    import optuna

    def run(trial) -> float:
        _claim(trial, n_trials)
        trial.set_user_attr(WORKER_ATTR, worker)
        run_id = logger.start(trial, objective.values(trial), worker)
        last: list[float] = []

        def on_report(_trial, step: int, value: float) -> None:
            last.append(value)
            _safe(logger.intermediate, run_id, step, value)

        objective.on_report = on_report
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            _safe(logger.finish, run_id, "PRUNED", last[-1] if last else None)
            raise
        except BaseException as exc:
            _safe(logger.finish, run_id, "FAIL", error=f"{type(exc).__name__}: {exc}")
            raise
        _safe(logger.finish, run_id, "COMPLETE", value)
        return value

    return run


def work(study, objective, tune: TuneParams, *, logger: TrialLogger, worker: str,
         deadline: float | None, heartbeat: bool) -> int:
    """The worker loop of the module docstring; returns how many trials this worker ran."""
    import optuna

    from metafgnet.training import NonFiniteError

    n_trials, poll_s = tune.n_trials, min(5.0, tune.heartbeat_interval)
    wrapped = _tracked(objective, logger, worker, n_trials)
    ran = failed = 0
    fails_seen = -1
    finished: list = []  # the frozen trial of each optimize() call

    def keep(_study, trial) -> None:
        finished.append(trial)

    initial = sum(counts(study).get(s, 0) for s in COUNTED)
    with Progress(f"trials of worker {worker}", n_trials, unit="trial", initial=initial) as bar:
        while True:
            fail_stale(study)
            state = counts(study)
            if state.get("FAIL", 0) != fails_seen:  # new FAIL trials: close killed workers' runs
                fails_seen = state.get("FAIL", 0)
                logger.sync_failed(study.get_trials(deepcopy=False))
            done = sum(state.get(s, 0) for s in COUNTED)
            bar.update(max(0, done - bar.n))  # trials finished by any worker count
            if done >= n_trials:
                break
            if deadline is not None and time.time() >= deadline:
                log.info("worker %s: timeout reached with %d/%d trials", worker, done, n_trials)
                break
            if done + state.get("RUNNING", 0) >= n_trials:
                if not heartbeat:
                    log.warning("worker %s: %d trial(s) RUNNING fill the budget; without heartbeat "
                                "(journal storage) a dead worker's trial is not detected: run "
                                "`metafgnet tune --fail-running` once no worker is left",
                                worker, state.get("RUNNING", 0))
                    break
                time.sleep(poll_s)
                continue
            study.optimize(wrapped, n_trials=1, catch=(NonFiniteError, BudgetReached),
                           callbacks=[keep])
            trial = finished[-1]
            if trial.user_attrs.get(OVERFLOW_ATTR):
                continue
            ran += 1
            if trial.state == optuna.trial.TrialState.FAIL:
                failed += 1
                if failed > n_trials:
                    raise RuntimeError(f"worker {worker}: {failed} trials failed (non-finite losses); "
                                       "narrow tune.space (learning rates, inner_lr)")
    return ran
