"""`metafgnet tune` on a real PostgreSQL study (the shared storage of several machines): two
separately started worker processes share one budget; one is killed with SIGKILL in the middle
of a trial, the other fails that trial through the heartbeat and completes the budget exactly."""

from __future__ import annotations

import os
import signal
import time

import mlflow
import optuna
import pytest

# starts processes, servers or torchrun: `make test-fast` leaves it out
pytestmark = pytest.mark.slow

TIMEOUT_S = 300
N_TRIALS = 4


def _args(tiny, params_file, out, url: str, worker: str) -> list[str]:
    return ["tune", "--params", str(params_file), "--storage", url, "--out", str(out),
            "--data", str(tiny.data_dir), "--init", str(tiny.init), "--worker-id", worker]


def _running(storage, study: str) -> list:
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(
            states=(optuna.trial.TrialState.RUNNING,))
    except (KeyError, ValueError):  # the study is not created yet
        return []


def test_worker_killed_mid_trial_on_postgres_fails_its_trial_and_the_budget_is_exact(
        tiny, postgres, mlflow_uri, experiment, tmp_path, start_cli):
    url = postgres.create_database("tune")
    storage = optuna.storages.RDBStorage(url)  # one connection pool for the test's polling
    # heartbeat 1 s, grace 3 s (tiny); six fine-tuning epochs so that the kill lands mid-trial
    params_file = tiny.write_params(tmp_path / "params.yaml", experiment,
                                    study_name="pg-kill", n_trials=N_TRIALS, pruner="none",
                                    budget={"finetune_epochs": 6})
    # started together, as on two machines: each creates-or-loads the study
    survivor, doomed = (start_cli(_args(tiny, params_file, tmp_path / f"out-{w}", url, w), tmp_path,
                                  tmp_path / f"{w}.log") for w in ("a", "b"))
    deadline = time.time() + TIMEOUT_S
    victim = None
    while victim is None:
        assert time.time() < deadline and doomed.poll() is None, (
            (tmp_path / "b.log").read_text()[-4000:])
        time.sleep(0.2)
        victim = next((t for t in _running(storage, "pg-kill")
                       if t.user_attrs.get("worker") == "b" and t.intermediate_values), None)
    os.kill(doomed.pid, signal.SIGKILL)  # mid fine-tuning: nobody tells the storage
    doomed.wait()

    try:
        survivor.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        if survivor.poll() is None:
            survivor.kill()
    assert survivor.returncode == 0, (tmp_path / "a.log").read_text()[-4000:]

    trials = optuna.load_study(study_name="pg-kill", storage=storage).get_trials()
    states = {t.number: t.state.name for t in trials}
    assert states[victim.number] == "FAIL", states  # failed by the heartbeat, not by hand
    assert not trials[victim.number].user_attrs.get("budget_overflow")
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == N_TRIALS, states  # the budget is exact: the FAIL did not count
    others = [t for t in trials if t.number != victim.number and t not in finished]
    # only a trial that lost the race for the last slot may end otherwise, before any work
    assert all(t.state.name == "FAIL" and t.user_attrs.get("budget_overflow")
               and not t.intermediate_values for t in others), states
    assert len({tuple(sorted(t.params.items())) for t in finished}) == N_TRIALS
    assert (tmp_path / "out-a" / "best_params.yaml").is_file()
    # both processes ran trials; the killed one's run is closed as FAILED by the survivor
    assert {t.user_attrs["worker"] for t in trials if "worker" in t.user_attrs} == {"a", "b"}
    run = mlflow.MlflowClient(mlflow_uri).get_run(trials[victim.number].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
