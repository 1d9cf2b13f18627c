"""The shared-server recipe has a door: ``mlflow server --app-name basic-auth`` on 127.0.0.1,
a user made by the admin, a stage (through its tracking agent) recording with the credentials
of the environment; requests without them are refused (401), and so is a stage without them,
with a message that says which variables to set."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from support import servers

# starts processes, servers or torchrun: `make test-fast` leaves it out
pytestmark = pytest.mark.slow

ADMIN = "admin"
USER = "alice"

STAGE = textwrap.dedent("""\
    import os

    from metafgnet.errors import UserError
    from metafgnet.params import TrackingParams, parse_params
    from metafgnet.stages.failure import fail
    from metafgnet.tracking import stage_run

    params = parse_params({"seed": 5})
    try:
        with stage_run("evaluate", params, [], TrackingParams(experiment="secured",
                       system_metrics=False), lineage=True) as run:
            run.log_metrics({"top1": 0.5}, step=0)
            print(run.run_id, run.experiment_id, run.pid(), os.getpid())
    except UserError as exc:
        fail("evaluate", exc)
    """)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A basic-auth server (the recipe of docs/security.md), its admin password and folder."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs mlflow[auth]")
    root = tmp_path_factory.mktemp("auth_server")
    config = root / "basic_auth.ini"
    config.write_text(textwrap.dedent(f"""\
        [mlflow]
        default_permission = READ
        database_uri = sqlite:///{root / 'basic_auth.db'}
        admin_username = {ADMIN}
        authorization_function = mlflow.server.auth:authenticate_request_basic_auth
        """))
    admin_password = secrets.token_urlsafe(16)
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    with servers.mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root, app_name="basic-auth",
                               env=env) as url:
        yield url, admin_password, root


def _request(url: str, method: str = "GET", body: dict | None = None,
             auth: tuple[str, str] | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 (127.0.0.1)
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _stage(url: str, repo: Path, credentials: dict[str, str]) -> subprocess.CompletedProcess:
    (repo / "stage.py").write_text(STAGE)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update({"MLFLOW_TRACKING_URI": url, "PYTHONPATH": src, "OMP_NUM_THREADS": "1",
                "METAFGNET_EXECUTION_ID": uuid.uuid4().hex, "METAFGNET_AGENT_IDLE_S": "5",
                **credentials})
    return subprocess.run([sys.executable, "stage.py"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_stage_records_with_credentials_and_nothing_passes_without(auth_server, git_repo):
    url, admin_password, root = auth_server
    api = f"{url}/api/2.0/mlflow"
    user_password = secrets.token_urlsafe(16)
    status, body = _request(f"{api}/users/create", "POST",
                            {"username": USER, "password": user_password},
                            auth=(ADMIN, admin_password))
    assert status == 200, body

    done = _stage(url, git_repo, {"MLFLOW_TRACKING_USERNAME": USER,
                                  "MLFLOW_TRACKING_PASSWORD": user_password})
    assert done.returncode == 0, done.stderr
    run_id, experiment_id, recorder_pid, stage_pid = done.stdout.split()
    assert recorder_pid != stage_pid  # recorded by the tracking agent, with the stage's variables
    status, body = _request(f"{api}/runs/get?run_id={run_id}", auth=(USER, user_password))
    assert status == 200, body
    run = json.loads(body)["run"]
    assert run["info"]["status"] == "FINISHED"
    assert [m["value"] for m in run["data"]["metrics"] if m["key"] == "top1"] == [0.5]

    status, body = _request(f"{url}/api/3.0/mlflow/users/permissions/get?username={USER}"
                            f"&resource_type=experiment&resource_id={experiment_id}",
                            auth=(ADMIN, admin_password))
    assert status == 200 and json.loads(body)["permission"] == "MANAGE", body  # alice made it

    # the door: no credentials, or wrong ones, and nothing is read or written
    for auth in (None, (USER, "not-the-password")):
        assert _request(f"{api}/runs/get?run_id={run_id}", auth=auth)[0] == 401
        assert _request(f"{api}/experiments/search?max_results=5", auth=auth)[0] == 401
        assert _request(f"{api}/runs/create", "POST", {"experiment_id": "0"}, auth=auth)[0] == 401
    refused = _stage(url, git_repo, {})
    assert refused.returncode == 2, refused.stderr
    assert "error: stage 'evaluate' stopped" in refused.stderr
    assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in refused.stderr

    # the user's password is in no record of the server (basic_auth.db keeps a hash)
    for path in [p for p in root.rglob("*") if p.is_file() and p.name != "basic_auth.db"]:
        assert user_password.encode() not in path.read_bytes(), path
