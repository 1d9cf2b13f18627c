"""Worker processes of one invocation: ``--workers N`` runs one worker in this process and
N-1 spawned ones; separately started invocations (other shells, other machines with a shared
database URL) are workers too. All of them follow the budget rule of
:mod:`metafgnet.tuning.study`.

Seeds: each worker's sampler is seeded from ``tune.sampler.seed``, the number of trials in the
study when the invocation started and the worker id, so a single-worker fresh study repeats, a
resumed study does not redraw its first points, and workers draw different points. Give
separately started processes distinct ``--worker-id`` s (when they start while others run, the
host name and pid are mixed in anyway).

Sharing the machine: the workers of one invocation pin ``runtime.num_threads`` capped at
``cores // workers`` (:func:`metafgnet.training.runtime.shared_threads`), and on GPUs each
leases its own device when it sets up its runtime (:mod:`metafgnet.distributed.devices`).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from metafgnet.params import Params, parse_params, to_dict
from metafgnet.training.runtime import shared_threads
from metafgnet.tuning.mlflow_log import TrackerRef, TrialLogger
from metafgnet.tuning.schema import TuneParams
from metafgnet.tuning.storage import has_heartbeat
from metafgnet.tuning.study import counts, make_sampler, open_study, work

log = logging.getLogger("metafgnet.tuning")

READY_TIMEOUT_S = 120.0


def sampler_seed(tune: TuneParams, existing: int, worker: str) -> int:
    """The sampler seed of one worker (module docstring); fits NumPy's 32-bit seeds."""
    from metafgnet.training.runtime import derive_seed

    return derive_seed(tune.sampler.seed, f"tune:{existing}:{worker}") % 2**32


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs (picklable)."""

    params: dict  # to_dict(Params), re-validated in the worker
    url: str
    data_dir: str
    init: str
    tracker: TrackerRef | None
    worker: str  # worker id: seeds the sampler, tags the trials' runs
    existing: int  # trials in the study when the invocation started
    deadline: float | None  # time.time() after which no trial starts


def run_worker(spec: WorkerSpec, ready=None) -> int:
    """One worker: set up the runtime, load data and study, run :func:`work`.

    ``ready``: a barrier shared by the workers of one invocation, passed once set up, so that
    the worker in the (already warm) main process does not take every trial before the
    spawned ones have imported torch; a worker that never arrives delays the others by at
    most :data:`READY_TIMEOUT_S`.
    """
    from metafgnet.data import load_prepared
    from metafgnet.training import setup_runtime
    from metafgnet.tuning.objective import Objective

    params = parse_params(spec.params)
    tune = params.tune
    device = setup_runtime(params.runtime, params.seed)
    data = load_prepared(Path(spec.data_dir))
    seed = sampler_seed(tune, spec.existing, spec.worker)
    study = open_study(params, spec.url, sampler=make_sampler(tune, seed))
    objective = Objective(params, data, Path(spec.init), device)
    if ready is not None:
        try:
            ready.wait(timeout=READY_TIMEOUT_S)
        except threading.BrokenBarrierError:
            log.warning("worker %s: not every worker started; going on", spec.worker)
    ran = work(study, objective, tune, logger=TrialLogger(spec.tracker), worker=spec.worker,
               deadline=spec.deadline, heartbeat=has_heartbeat(spec.url))
    log.info("worker %s ran %d trial(s)", spec.worker, ran)
    return ran


def _worker_main(spec: WorkerSpec, ready) -> None:
    """Entry point of a spawned worker process."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s w{spec.worker} %(message)s",
                        force=True)
    run_worker(spec, ready)


def worker_id(index: int, explicit: str | None, study) -> str:
    """``explicit`` (``--worker-id``), else the index within this invocation; mixed with host and
    pid when other workers are already running on the study (separately started processes)."""
    if explicit:
        return explicit
    if counts(study).get("RUNNING", 0):
        return f"{index}@{socket.gethostname()}:{os.getpid()}"
    return str(index)


def run_workers(specs: list[WorkerSpec]) -> None:
    """Run the first spec in this process and the others in spawned processes (one process
    start saved); raise if any failed. A failure here stops the spawned workers: their
    running trials go stale and the heartbeat marks them FAIL."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    ready = ctx.Barrier(len(specs)) if len(specs) > 1 else None
    procs = [ctx.Process(target=_worker_main, args=(spec, ready),
                         name=f"tune-worker-{spec.worker}") for spec in specs[1:]]
    for proc in procs:
        proc.start()
    try:
        run_worker(specs[0], ready)
        for proc in procs:
            proc.join()
    except BaseException:
        for proc in procs:  # our own children only
            if proc.is_alive():
                proc.terminate()
                proc.join()
        raise
    bad = [f"{p.name} (exit {p.exitcode})" for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"tuning worker(s) failed: {', '.join(bad)}; the study keeps every "
                           "finished trial, rerun to complete the budget")


def specs_for(params: Params, url: str, *, workers: int, data_dir: str, init: str,
              tracker: TrackerRef | None, study: Any, explicit_id: str | None = None,
              ) -> list[WorkerSpec]:
    """One :class:`WorkerSpec` per worker of this invocation."""
    tune = params.tune
    deadline = time.time() + tune.timeout if tune.timeout else None
    existing = len(study.get_trials(deepcopy=False))
    base = worker_id(0, explicit_id, study)
    raw = to_dict(params)
    if workers > 1:  # side by side on this machine's cores (each trial records its count)
        threads = shared_threads(params.runtime.num_threads, workers)
        if threads != params.runtime.num_threads:
            log.info("%d workers share the cores: runtime.num_threads %d -> %d each", workers,
                     params.runtime.num_threads, threads)
            raw["runtime"] = {**raw["runtime"], "num_threads": threads}
    return [WorkerSpec(raw, url, str(data_dir), str(init), tracker,
                       base if workers == 1 else f"{base}.{i}", existing, deadline)
            for i in range(workers)]
