"""`metafgnet check` names the missing PostgreSQL driver and its fix (the `postgres` extra)
for a postgresql:// study storage or tracking URI, before any stage or trial meets it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from metafgnet import preflight

URL = "postgresql://optuna@db.example:5432/optuna"
FIX = "pip install -e '.[postgres]'"
# the driver blocked in the child process: `import psycopg` raises ImportError there
BLOCKED = textwrap.dedent("""\
    import sys
    sys.modules["psycopg"] = None
    from metafgnet.cli import main
    sys.exit(main(sys.argv[1:]))
    """)


def _check_without_driver(args: list[str], cwd, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED, "check", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["tune.storage", "MLFLOW_TRACKING_URI"])
def test_check_names_the_extra_when_the_postgres_driver_is_missing(tmp_path, where):
    raw = {"tune": {"storage": URL}} if where == "tune.storage" else {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if where == "MLFLOW_TRACKING_URI":
        env[where] = URL
    out = _check_without_driver(["--params", "params.yaml"], tmp_path, env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert (f"  - {where} is a postgresql:// URL but its driver `psycopg` is not installed; "
            f"{FIX}") in out.stderr.splitlines(), out.stderr
    assert "Traceback" not in out.stderr


def test_no_driver_problem_when_the_driver_imports_or_no_postgres_url(tmp_path, monkeypatch):
    pytest.importorskip("psycopg")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"tune": {"storage": URL}}))
    assert not [p for p in preflight.problems(path, root=tmp_path) if "driver" in p]
    monkeypatch.setitem(sys.modules, "psycopg", None)  # blocked, but nothing asks for it
    path.write_text(yaml.safe_dump({"tune": {"storage": "sqlite:///optuna.db"}}))
    assert not [p for p in preflight.problems(path, root=tmp_path) if "driver" in p]
