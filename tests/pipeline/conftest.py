"""The tiny pipeline reproduced once per session, every stage's file accesses audited."""

import sys

import pytest

from support.repo import make_repo, run, tiny_params


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """The tiny pipeline reproduced once, with every stage's file accesses audited."""
    repo, env = make_repo(tmp_path_factory.mktemp("pipe") / "repo", tiny_params())
    env = {**env, "METAFGNET_AUDIT": str(repo.parent / "audit")}
    result = run([sys.executable, "-m", "dvc", "repro"], repo, env)
    return repo, env, result
