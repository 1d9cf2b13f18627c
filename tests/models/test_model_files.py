"""Model files depend only on their inputs: the same weights, params and inputs give the same
bytes at any commit, dirty or clean, in any folder; the provenance digest follows the inputs."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from metafgnet.models import build_model
from metafgnet.models.files import load_model, provenance_digest, save_model
from metafgnet.params import ModelParams, to_dict

ARCH = to_dict(ModelParams(width=4))
PARAMS = {"seed": 0, "meta": {"order": "second"}}
INPUTS = {"data": "d" * 64, "models/pretrain/model.pt": "a" * 64}


def _git_repo(path, message: str):
    """A git repository with one commit of its own (author, date, message differ per call)."""
    path.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": message, "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": message, "GIT_COMMITTER_EMAIL": "t@t"}
    (path / "README.md").write_text(message + "\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", message]):
        subprocess.run(["git", *cmd], cwd=path, env=env, check=True, capture_output=True)
    return path


def _model():
    torch.manual_seed(0)
    return build_model(ModelParams(width=4), 3, 5)


def test_same_inputs_give_the_same_bytes_at_any_commit(tmp_path, monkeypatch):
    model = _model()
    files = []
    for name in ("one", "two"):
        repo = _git_repo(tmp_path / name, f"commit {name}")
        (repo / "README.md").write_text("edited, uncommitted\n")  # a dirty worktree
        monkeypatch.chdir(repo)
        save_model(repo / "model.pt", model, ARCH, PARAMS, "meta_train", inputs=INPUTS)
        files.append((repo / "model.pt").read_bytes())
    assert files[0] == files[1]
    _, payload = load_model(tmp_path / "one" / "model.pt")
    assert payload["inputs"] == INPUTS
    assert payload["provenance"] == provenance_digest("meta_train", ARCH, PARAMS, INPUTS)
    text = repr({k: v for k, v in payload.items() if k != "state_dict"})
    for leak in (str(tmp_path), "git_revision", "git_dirty", "version"):
        assert leak not in text


@pytest.mark.parametrize("change", ["stage", "params", "upstream", "data"])
def test_the_provenance_digest_follows_every_input(change):
    stage, params, inputs = "meta_train", dict(PARAMS), dict(INPUTS)
    if change == "stage":
        stage = "meta_train_selected"
    elif change == "params":
        params["meta"] = {"order": "first"}
    elif change == "upstream":
        inputs["models/pretrain/model.pt"] = "b" * 64
    else:
        inputs["data"] = "e" * 64
    base = provenance_digest("meta_train", ARCH, PARAMS, INPUTS)
    assert provenance_digest(stage, ARCH, params, inputs) != base
    assert provenance_digest("meta_train", dict(ARCH), dict(PARAMS), dict(INPUTS)) == base
