"""The tiny pipeline reproduced once per session, then the documented comparison flow on a fresh
clone of it.

``tiny_pipeline``: ``dvc repro`` with every stage's file accesses audited, its results
committed (as the project commits its baseline ``dvc.lock`` and ``metrics/``).
``two_executions``: docs/comparing.md as a new user meets it: ``git clone`` (no DVC cache), a
commit outside every stage's dependencies, ``make run`` (``dvc repro``, then ``dvc exp save``
of the execution), then ``dvc exp run -n first-order -S meta.order=first``, run once; the
clone's workspace is then put back to its commit so every test sees the same files whatever
the order.
"""

import sys

import pytest

from support.repo import make_repo, make_run, run, tiny_params

DVC = [sys.executable, "-m", "dvc"]


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """The tiny pipeline reproduced once and committed, every stage's file accesses audited."""
    repo, env = make_repo(tmp_path_factory.mktemp("pipe") / "repo", tiny_params())
    # every progress update as a plain line: the captured log shows each step's progress
    env = {**env, "METAFGNET_AUDIT": str(repo.parent / "audit"), "METAFGNET_PROGRESS_EVERY": "0"}
    result = run([*DVC, "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline results"], repo, env)
    return repo, env, result


class Executions(tuple):
    """``(repo, env, exp_run_stdout)`` of the comparison flow, with ``baseline`` (the name of
    the experiment ``make run`` saved) and ``repro`` (the output of its ``dvc repro``)."""

    baseline: str
    repro: object


@pytest.fixture(scope="session")
def two_executions(tiny_pipeline, tmp_path_factory):
    """The documented comparison flow on a fresh clone: the baseline ``make run`` saves, then
    a first-order DVC experiment (module docstring)."""
    origin, env, _ = tiny_pipeline
    repo = tmp_path_factory.mktemp("clone") / "repo"
    env = {**{k: v for k, v in env.items() if k != "METAFGNET_AUDIT"},
           "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    run(["git", "clone", "-q", str(origin), str(repo)], origin.parent, env)
    (repo / "README.md").write_text("A change no stage depends on.\n")
    run(["git", "add", "README.md"], repo, env)
    run(["git", "commit", "-qm", "readme"], repo, env)
    baseline, repro = make_run(repo, env)
    out = run([*DVC, "exp", "run", "-n", "first-order", "-S", "meta.order=first"], repo, env)
    run(["git", "checkout", "--", "."], repo, env)
    run([*DVC, "checkout", "--force"], repo, env)
    executions = Executions((repo, env, out.stdout))
    executions.baseline, executions.repro = baseline, repro
    return executions
