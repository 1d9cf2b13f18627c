"""Where runs are recorded: the URI resolution rules and the server probe."""

from __future__ import annotations

import http.server
import re
import socket
import threading
import time

import pytest

from metafgnet.tracking import uri as uri_mod


def test_env_var_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker.example:5000")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert uri_mod.tracking_uri() == "http://tracker.example:5000"


def test_relative_sqlite_env_is_taken_from_the_repo_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///db/runs.db")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert uri_mod.tracking_uri() == f"sqlite:///{tmp_path}/db/runs.db"


def test_dvc_root_gives_absolute_sqlite_at_the_real_repo(monkeypatch, tmp_path, git_repo):
    # Inside `dvc exp run --temp` the cwd is a copy under .dvc/tmp/exps; DVC_ROOT is the repo.
    copy = git_repo / ".dvc" / "tmp" / "exps" / "tmpabc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(git_repo))
    uri = uri_mod.tracking_uri()
    assert uri == f"sqlite:///{git_repo}/mlflow.db"
    assert uri.startswith("sqlite:////")  # four slashes: an absolute path
    assert uri_mod.artifact_location(uri) == (git_repo / "mlartifacts").as_uri()


def test_git_root_without_dvc(monkeypatch, git_repo):
    sub = git_repo / "pipeline"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert uri_mod.repo_root() == git_repo.resolve()
    assert uri_mod.tracking_uri() == f"sqlite:///{git_repo.resolve()}/mlflow.db"


def test_one_repo_root_follows_cwd_and_dvc_root(monkeypatch, git_repo, tmp_path):
    from metafgnet import provenance, tracking

    assert tracking.repo_root is uri_mod.repo_root is provenance.repo_root
    sub = git_repo / "pipeline"
    sub.mkdir()
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert provenance.repo_root(sub) == git_repo.resolve()  # explicit cwd, not the process's
    monkeypatch.chdir(sub)
    assert provenance.repo_root() == git_repo.resolve()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # not cached: a later DVC_ROOT counts
    assert provenance.repo_root() == tmp_path.resolve()
    assert provenance.repo_root(sub) == tmp_path.resolve()


def test_cwd_outside_any_repository(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert uri_mod.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_server_uri_has_no_local_artifact_location():
    assert uri_mod.artifact_location("http://127.0.0.1:5000") is None


def test_redact_hides_credentials():
    from metafgnet.credentials import redact_text

    assert redact_text("https://me:secret@host.example:8443/x") == "https://host.example:8443/x"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_of_a_closed_port_fails_fast_naming_the_uri():
    uri = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(uri_mod.TrackingUnavailable, match=re.escape(uri)) as err:
        uri_mod.probe(uri)
    assert time.monotonic() - start < 2
    assert "tracking.offline" in str(err.value)


def test_probe_of_a_silent_server_times_out():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(uri_mod.TrackingUnavailable, match="timed out"):
            uri_mod.probe(uri, timeout=1.0)
        assert time.monotonic() - start < 3


@pytest.mark.parametrize(("status", "reachable"), [(200, True), (401, True), (404, False),
                                                  (503, False)])
def test_probe_needs_an_answer_from_a_tracking_server(status, reachable):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            if reachable:
                uri_mod.probe(uri)
            else:
                with pytest.raises(uri_mod.TrackingUnavailable, match=f"HTTP {status}"):
                    uri_mod.probe(uri)
        finally:
            server.shutdown()


def test_local_stores_are_not_probed(tmp_path):
    """A local store is opened by the stage itself: probing neither fails nor creates it."""
    for uri in (f"sqlite:///{tmp_path}/mlflow.db", f"file://{tmp_path}/mlruns", str(tmp_path / "x")):
        assert uri_mod.probe(uri, timeout=0.01) is None
    assert list(tmp_path.iterdir()) == []
