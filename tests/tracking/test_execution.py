"""How stage processes of one pipeline execution find each other, and git provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from metafgnet import provenance
from metafgnet.tracking import execution

_PROBE = ("import json, os; from metafgnet.tracking import execution as e; "
          "print(json.dumps([e.execution_id(), e.dvc_ancestor()]))")


@pytest.mark.parametrize(("argv", "expected"), [
    (["/usr/bin/dvc", "repro"], True),
    (["/venv/bin/python3", "/venv/bin/dvc", "exp", "exec-run", "--infofile", "x"], True),
    (["python", "-m", "dvc", "exp", "run"], True),
    (["python", "pipeline/meta_train.py"], False),
    (["/bin/sh", "-c", "dvc repro"], False),
    ([], False),
])
def test_is_dvc_command(argv, expected):
    assert execution.is_dvc_command(argv) is expected


def test_explicit_execution_id_wins(monkeypatch):
    monkeypatch.setenv(execution.EXECUTION_ENV, "my-sweep-7")
    assert execution.execution_id() == "my-sweep-7"


@pytest.fixture
def fake_dvc(tmp_path):
    """An executable named ``dvc`` that runs the probe twice, once through a shell."""
    script = tmp_path / "bin" / "dvc"
    script.parent.mkdir()
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os, subprocess, sys
        probe = [sys.executable, "-c", {_PROBE!r}]
        out = [subprocess.run(probe, capture_output=True, text=True, check=True).stdout,
               subprocess.run(["/bin/sh", "-c", " ".join(repr(a) for a in probe)],
                              capture_output=True, text=True, check=True).stdout]
        print(os.getpid())
        print("".join(out), end="")
        """))
    script.chmod(0o755)
    return script


def _run_fake(fake_dvc):
    env = {k: v for k, v in os.environ.items() if k != execution.EXECUTION_ENV}
    lines = subprocess.run([str(fake_dvc)], capture_output=True, text=True, check=True,
                           env=env).stdout.splitlines()
    return int(lines[0]), [json.loads(line) for line in lines[1:]]


@pytest.mark.slow
def test_stages_under_one_dvc_process_share_an_id(fake_dvc):
    dvc_pid, probes = _run_fake(fake_dvc)
    assert [p[1] for p in probes] == [dvc_pid, dvc_pid]  # found through the shell too
    assert probes[0][0] == probes[1][0]
    _, again = _run_fake(fake_dvc)
    assert again[0][0] != probes[0][0]  # another `dvc repro` is another execution


@pytest.mark.slow
def test_a_stage_run_by_hand_is_its_own_execution():
    env = {k: v for k, v in os.environ.items() if k != execution.EXECUTION_ENV}
    ids = [json.loads(subprocess.run([sys.executable, "-c", _PROBE], capture_output=True,
                                     text=True, check=True, env=env).stdout)
           for _ in range(2)]
    assert ids[0][1] is None and ids[1][1] is None
    assert ids[0][0] != ids[1][0]


def test_git_dirty_ignores_what_the_pipeline_writes(git_repo):
    assert provenance.git_dirty(git_repo) is False
    (git_repo / "dvc.lock").write_text("rewritten by dvc after a stage\n")
    assert provenance.git_dirty(git_repo) is False
    (git_repo / "metrics").mkdir()
    (git_repo / "metrics" / "eval.json").write_text("{}\n")
    subprocess.run(["git", "add", "metrics"], cwd=git_repo, check=True)
    assert provenance.git_dirty(git_repo) is False  # staged metrics written by a stage
    (git_repo / "params.yaml").write_text("seed: 3\n")  # e.g. `dvc exp run -S seed=3`
    assert provenance.git_dirty(git_repo) is True
    assert len(provenance.git_revision(git_repo)) == 40


def test_no_git_gives_none(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.git_revision(tmp_path) is None
    assert provenance.git_dirty(tmp_path) is None


def test_no_git_leaves_the_git_tags_out(tmp_path, monkeypatch):
    from metafgnet.params import Params
    from metafgnet.tracking.run_tags import GIT_COMMIT, GIT_DIRTY, provenance_tags

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.chdir(tmp_path)
    tags = provenance_tags(Params())
    assert GIT_COMMIT not in tags and GIT_DIRTY not in tags  # absent, not a made-up "unknown"
