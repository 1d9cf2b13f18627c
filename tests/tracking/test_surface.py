"""One declared tracking surface: a stage calls what the Recorder declares, nothing is listed
twice. A public method added to ``Recorder`` (and nothing else) is a call of the stage's run
through the tracking agent, and a no-op on the run of a stage that records nothing."""

from __future__ import annotations

import ast
import dataclasses
import threading
from multiprocessing import Pipe
from pathlib import Path

import pytest

import metafgnet.tracking as tracking_pkg
from metafgnet.params import TrackingParams, parse_params
from metafgnet.tracking import TrackingError, runs, stage_run
from metafgnet.tracking.agent import RemoteRecorder, serve_stage
from metafgnet.tracking.recorder import Recorder, operations

PARAMS = parse_params({"seed": 3})


def _note(self, text: str) -> str:
    """A new kind of call, declared on the Recorder alone."""
    self.set_tags({"note": text})
    return text.upper()


@pytest.fixture
def agent_in_thread(monkeypatch):
    """The agent's own serving code (:func:`serve_stage`) in a thread of this process, so that
    it sees the method this test adds to Recorder; stages reach it over a pipe instead of the
    agent's authenticated socket."""
    served: list[threading.Thread] = []

    def remote(tracking, uri, execution):
        stage_end, agent_end = Pipe()
        thread = threading.Thread(target=serve_stage, args=(agent_end,), daemon=True)
        thread.start()
        served.append(thread)
        return RemoteRecorder(uri, execution, connection=(stage_end, Path("in-thread")))

    monkeypatch.setattr(runs, "_recorder", remote)
    yield served
    for thread in served:
        thread.join(10)
        assert not thread.is_alive()


def test_a_method_added_to_the_recorder_is_a_stage_call_through_the_agent(
        client, tracking, agent_in_thread, monkeypatch):
    monkeypatch.setattr(Recorder, "note", _note, raising=False)
    assert "note" in operations()
    with stage_run("evaluate", PARAMS, [], dataclasses.replace(tracking, agent=True)) as run:
        assert run.note("hello") == "HELLO"  # made by the Recorder in the agent's thread
        run_id = run.run_id
    assert len(agent_in_thread) == 1
    assert client.get_run(run_id).data.tags["note"] == "hello"
    assert client.get_run(run_id).info.status == "FINISHED"


def test_the_same_method_is_a_no_op_on_a_run_that_records_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(Recorder, "note", _note, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/never.db")
    with stage_run("evaluate", PARAMS, [], TrackingParams(enabled=False)) as run:
        assert not run.enabled and run.run_id is None
        assert run.note("hello") is None
    assert runs.StageRun.null("rank-1").note("hello") is None  # a rank other than the main one
    assert not (tmp_path / "never.db").exists()


def test_only_the_recorder_s_operations_are_calls(monkeypatch):
    run = runs.StageRun.null("evaluate")
    for name in ("note", "open", "finish", "fail", "abandon"):  # unknown, or the run's own
        with pytest.raises(AttributeError):
            getattr(run, name)
    with pytest.raises(AttributeError):
        runs.NullRecorder().note  # noqa: B018
    monkeypatch.setattr(Recorder, "note", _note, raising=False)
    assert runs.NullRecorder().note("x") is None
    assert "abandon" not in operations() and "_end" not in operations()


def test_a_null_run_does_not_read_metric_values():
    """float() of a CUDA tensor synchronises the device: a rank that records nothing skips it."""

    class Unread:
        def __float__(self):
            raise AssertionError("read by a run that records nothing")

    runs.StageRun.null("meta_train").log_metrics({"loss": Unread()}, step=1)


def test_the_agent_answers_no_call_the_recorder_does_not_declare():
    stage_end, agent_end = Pipe()
    thread = threading.Thread(target=serve_stage, args=(agent_end,), daemon=True)
    thread.start()
    remote = RemoteRecorder("", "", connection=(stage_end, Path("in-thread")))
    with pytest.raises(AttributeError):
        remote.note  # noqa: B018
    with pytest.raises(TrackingError, match="unknown tracking call '_end'"):
        remote._call("_end", ("FINISHED",), {})  # a Recorder method, but not a declared one
    assert remote.pid() > 0  # the agent's own call
    remote.close()
    thread.join(10)


def test_the_runs_table_view_is_installed_through_the_stage_run(client, tracking):
    """The report stage's call (no StageRun method written for it): the view names the arms it
    is given, on the run's experiment."""
    from metafgnet.tracking.views import COMPARE_VIEW, TAG_PREFIX, view_tags

    with stage_run("report", PARAMS, [], tracking) as run:
        run.set_experiment_tags(view_tags(("alpha", "beta")))
        experiment_id = run.experiment_id
    view = client.get_experiment(experiment_id).tags[TAG_PREFIX + COMPARE_VIEW]
    assert "metrics.`test_top1/alpha`" in view and "metrics.`test_top1/beta`" in view


def test_tracking_imports_neither_the_data_nor_the_evaluation_code():
    """What tracking needs of them (manifest paths, arms) is passed in by its callers: no
    import of theirs anywhere in its modules, at the top or inside a function."""
    found = []
    for path in sorted(Path(tracking_pkg.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names
                      if n.startswith(("metafgnet.data", "metafgnet.evaluation"))]
    assert not found
