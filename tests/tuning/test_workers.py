"""Real `metafgnet tune` processes on one storage: two workers share the budget; a worker
killed with SIGKILL mid-trial leaves that trial FAIL (heartbeat) and a rerun completes it."""

from __future__ import annotations

import os
import signal
import time

import mlflow
import optuna
import pytest

# starts processes, servers or torchrun: `make test-fast` leaves it out
pytestmark = pytest.mark.slow

TIMEOUT_S = 240


def _args(tiny, params_file, out, *extra) -> list[str]:
    return ["tune", "--params", str(params_file), "--out", str(out), "--data", str(tiny.data_dir),
            "--init", str(tiny.init), *extra]


def _wait(proc, log, timeout=TIMEOUT_S) -> None:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-4000:]


def _finished(trials) -> list:
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


def test_two_workers_complete_the_budget_together(tiny, mlflow_uri, experiment, tmp_path,
                                                  start_cli):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    params_file = tiny.write_params(tmp_path / "params.yaml", experiment, storage=url,
                                    study_name="pair", n_trials=2)
    log = tmp_path / "tune.log"
    proc = start_cli(_args(tiny, params_file, tmp_path / "out", "--workers", "2",
                           "--n-trials", "5"), tmp_path, log)
    _wait(proc, log)

    trials = optuna.load_study(study_name="pair", storage=url).get_trials()
    finished = _finished(trials)
    assert len(finished) == 5, [(t.number, t.state.name) for t in trials]
    # a trial that lost the race for the last slot ends FAIL before doing any work
    assert all(t.user_attrs.get("budget_overflow") for t in trials if t not in finished)
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 5  # no trial ran twice
    workers = {t.user_attrs["worker"] for t in finished}
    assert workers == {"0.0", "0.1"}, workers  # both processes contributed
    assert (tmp_path / "out" / "best_params.yaml").is_file()

    client = mlflow.MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`metafgnet.role` = 'trial'")
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == sorted(
        t.number for t in trials if "mlflow_run_id" in t.user_attrs)


def test_killed_worker_leaves_a_failed_trial_and_a_rerun_completes_the_budget(
        tiny, mlflow_uri, experiment, tmp_path, start_cli):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    # longer fine-tuning so that the kill lands mid-trial; heartbeat 1 s, grace 3 s (tiny)
    params_file = tiny.write_params(tmp_path / "params.yaml", experiment, storage=url,
                                    study_name="kill", n_trials=3, pruner="none",
                                    budget={"finetune_epochs": 6})
    out = tmp_path / "out"
    log1 = tmp_path / "first.log"
    proc = start_cli(_args(tiny, params_file, out), tmp_path, log1)
    victim = None
    deadline = time.time() + TIMEOUT_S
    while victim is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            running = optuna.load_study(study_name="kill", storage=url).get_trials(
                states=(optuna.trial.TrialState.RUNNING,))
        except (KeyError, ValueError):  # the study is not created yet
            continue
        victim = next((t for t in running if t.intermediate_values), None)  # fine-tuning
    assert victim is not None, log1.read_text()[-4000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    study = optuna.load_study(study_name="kill", storage=url)
    assert study.trials[victim.number].state.name == "RUNNING"  # nobody told the storage
    log2 = tmp_path / "second.log"
    rerun = start_cli(_args(tiny, params_file, out), tmp_path, log2)
    _wait(rerun, log2)

    trials = optuna.load_study(study_name="kill", storage=url).get_trials()
    assert trials[victim.number].state.name == "FAIL"  # failed by the heartbeat
    assert len(_finished(trials)) == 3
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials if t.number != victim.number)
    assert (out / "best_params.yaml").is_file()

    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(trials[victim.number].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
