"""Credentials never leave the environment: a password in a URL of the params (``tune.storage``)
reaches neither the MLflow store (params, tags, artifacts) nor the logs."""

from __future__ import annotations

import logging
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from metafgnet.credentials import redact_text
from metafgnet.params import parse_params
from metafgnet.tracking import stage_run


def test_redact_url_and_text():
    assert redact_text("postgresql://me:p@ss@db.example:5432/optuna") == (
        "postgresql://db.example:5432/optuna")
    assert redact_text("sqlite:////abs/optuna.db") == "sqlite:////abs/optuna.db"
    text = "a http://u:pw@h/x, b postgresql+psycopg://me:s3@db/o and c https://h/p?u=a@b"
    assert redact_text(text) == "a http://h/x, b postgresql+psycopg://db/o and c https://h/p?u=a@b"


def _files(folder: Path):
    return [p for p in folder.rglob("*") if p.is_file()]


def test_a_password_in_the_params_is_in_no_record_nor_log(tmp_path, git_repo, monkeypatch,
                                                           caplog, capfd):
    password = f"pw-{uuid.uuid4().hex}"
    url = f"postgresql://tuner:{password}@db.example:5432/optuna"
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("METAFGNET_EXECUTION_ID", uuid.uuid4().hex)
    monkeypatch.chdir(git_repo)
    # committed params without the URL; the working copy sets it, as `dvc exp run -S` would
    raw = {"seed": 3, "tune": {"storage": url}}
    (git_repo / "params.yaml").write_text(yaml.safe_dump({"seed": 3}))
    subprocess.run(["git", "commit", "-qam", "params"], cwd=git_repo, check=True)
    (git_repo / "params.yaml").write_text(yaml.safe_dump(raw))
    params = parse_params(raw)
    caplog.set_level(logging.DEBUG)

    # evaluate and report log every params section (lineage); the failing one logs its error
    with stage_run("evaluate", params, ["select"], params.tracking, lineage=True,
                   system_metrics=False) as run:
        run.log_params({"storage_seen": url})
        run.set_tags({"storage_tag": url})
        evaluate_id, parent_id = run.run_id, run.parent_run_id
    with pytest.raises(ConnectionError), stage_run(
            "report", params, ["select"], params.tracking, lineage=True,
            system_metrics=False) as run:
        raise ConnectionError(f"could not reach {url}")

    import mlflow

    client = mlflow.MlflowClient()
    logged = client.get_run(evaluate_id).data
    assert logged.params["tune.storage"] == "postgresql://db.example:5432/optuna"
    assert logged.params["storage_seen"] == "postgresql://db.example:5432/optuna"
    assert logged.tags["storage_tag"] == "postgresql://db.example:5432/optuna"
    assert "tune.storage=postgresql://db.example:5432/optuna" in (
        client.get_run(parent_id).data.tags["params.overrides"])
    assert "could not reach postgresql://db.example" in client.get_run(run.run_id).data.tags[
        "error"]

    files = _files(store)
    assert store / "mlflow.db" in files and any("traceback" in p.name for p in files)
    for path in files:  # the database, the artifacts (the error's traceback)
        assert password.encode() not in path.read_bytes(), path
    out, err = capfd.readouterr()
    assert password not in out + err + caplog.text


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test tells its trial by hand
def test_a_password_in_tune_storage_is_in_no_tuning_record_nor_output(postgres, tmp_path,
                                                                      monkeypatch, caplog,
                                                                      capfd):
    """The tuner's own paths: the study on a real PostgreSQL (its trust authentication takes
    any password), the invocation's parent run in MLflow, the outputs of the tune stage."""
    from metafgnet.tuning.mlflow_log import finish_parent, start_parent
    from metafgnet.tuning.run import report_only
    from metafgnet.tuning.space import suggest
    from metafgnet.tuning.study import open_study

    password = f"pw-{uuid.uuid4().hex}"
    plain = postgres.create_database("secret")
    url = plain.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    assert password in url
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("METAFGNET_EXECUTION_ID", uuid.uuid4().hex)
    params = parse_params({"tune": {"storage": url, "n_trials": 1, "study_name": "secret"},
                           "tracking": {"experiment": "secret-tune"}})
    caplog.set_level(logging.DEBUG)

    study = open_study(params, url)  # the study really lives there
    trial = study.ask()
    suggest(trial, params.tune.space)
    study.tell(trial, 0.5)
    out = tmp_path / "out"
    report_only(params, out)  # the tune stage's outputs, rewritten from the stored study
    ref = start_parent(params, "secret", redact_text(url), 1)
    finish_parent(ref, {"best_value": 0.5}, sorted(out.iterdir()))

    import mlflow

    logged = mlflow.MlflowClient().get_run(ref.parent_run_id).data
    assert logged.params["tune.storage"] == redact_text(url) == plain.replace("postgres@", "")
    assert yaml.safe_load((out / "summary.json").read_text())["storage"] == redact_text(url)
    for path in _files(store) + _files(out):  # database, artifacts (the outputs), outputs
        assert password.encode() not in path.read_bytes(), path
    out_text, err_text = capfd.readouterr()
    assert password not in out_text + err_text + caplog.text
