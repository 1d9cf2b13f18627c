"""Fixtures for the tracking tests: a real sqlite store, a real ``mlflow server``, no mocks."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from metafgnet.params import TrackingParams
from support import servers

BIN = Path(sys.executable).parent
_ENV_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "DVC_ROOT", "DVC_EXP_NAME",
             "DVC_EXP_BASELINE_REV", "DVC_STAGE", "METAFGNET_EXECUTION_ID")


free_port = servers.free_port


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory) -> Path:
    """One sqlite database for the in-process tests (its schema takes seconds to create)."""
    return tmp_path_factory.mktemp("mlflow_store")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No tracking or DVC variables leak in from the shell or between tests."""
    for key in _ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    # In-process recording sets MLflow's process-wide tracking URI (which outranks the
    # environment); start every test from the environment again.
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if utils is not None:
        monkeypatch.setattr(utils, "_tracking_uri", None)
    yield
    mlflow = sys.modules.get("mlflow")
    while mlflow is not None and mlflow.active_run() is not None:  # none may stay open
        mlflow.end_run("KILLED")


@pytest.fixture
def sqlite_uri(store_dir, monkeypatch) -> str:
    """MLFLOW_TRACKING_URI at the shared test database; each test is its own execution."""
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("METAFGNET_EXECUTION_ID", uuid.uuid4().hex)
    return uri


@pytest.fixture
def tracking(request) -> TrackingParams:
    """Tracking params with an experiment of this test's own, recorded from this process
    (``agent: false``: the models of these tests are classes of the test modules, which the
    agent cannot import; the agent itself is covered by test_agent.py and the pipeline tests)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:100]
    return TrackingParams(experiment=f"test-{name}", system_metrics=False, agent=False)


@pytest.fixture
def client(sqlite_uri):
    import mlflow

    return mlflow.MlflowClient(sqlite_uri)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def mlflow_server(request, tmp_path_factory):
    """A real, lean ``mlflow server`` on 127.0.0.1 (started once per backend store: a sqlite
    file, and a database of the session's PostgreSQL cluster, which skips where PostgreSQL is
    not installed); artifacts in a local folder. Yields its URL."""
    root = tmp_path_factory.mktemp(f"mlflow_server_{request.param}")
    backend = (f"sqlite:///{root / 'mlflow.db'}" if request.param == "sqlite"
               else request.getfixturevalue("postgres").create_database("mlflow"))
    with servers.mlflow_server(backend, root) as url:
        yield url


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def git_repo(tmp_path) -> Path:
    """A fresh git repository with one commit (tracked: README, dvc.lock, params.yaml)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    git("config", "user.email", "test@example.com", cwd=repo)
    git("config", "user.name", "test", cwd=repo)
    for name in ("README", "dvc.lock", "params.yaml"):
        (repo / name).write_text("v1\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "init", cwd=repo)
    return repo
