"""The tiny pipeline reproduced once per session, then one first-order experiment beside it.

``tiny_pipeline``: ``dvc repro`` with every stage's file accesses audited, its results
committed (as the project commits its baseline ``dvc.lock`` and ``metrics/``).
``two_executions``: ``dvc exp run -n first-order -S meta.order=first`` on top, run once; the
workspace is then put back to the baseline so every test sees the same files whatever the order.
"""

import sys

import pytest

from support.repo import make_repo, run, tiny_params

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


@pytest.fixture(scope="session")
def two_executions(tiny_pipeline):
    """The README's comparison flow: the baseline, then a first-order DVC experiment. Returns
    ``(repo, env, exp_run_stdout)``."""
    repo, env, _ = tiny_pipeline
    env = {k: v for k, v in env.items() if k != "METAFGNET_AUDIT"}
    out = run([*DVC, "exp", "run", "-n", "first-order", "-S", "meta.order=first"], repo, env)
    run(["git", "checkout", "--", "."], repo, env)
    run([*DVC, "checkout", "--force"], repo, env)
    return repo, env, out.stdout
