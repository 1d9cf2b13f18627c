"""`metafgnet check`: every problem a run would meet, listed at once, before any stage runs."""

from __future__ import annotations

import os
import stat

import pytest
import torch
import yaml

from metafgnet import preflight
from metafgnet.cli import main


def _params(tmp_path, raw: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_committed_params_are_ready_to_run(capsys):
    assert main(["check"]) == 0
    assert "ready to run" in capsys.readouterr().out


def test_all_problems_are_listed_together(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAFGNET_NO_DOWNLOAD", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))   # an empty weights cache
    path = _params(tmp_path, {
        "data": {"target": "cub", "target_root": str(tmp_path / "CUB"),
                 "auxiliary": "folder", "auxiliary_root": str(tmp_path / "aux")},
        "model": {"backbone": "resnet18", "pretrained": "imagenet"},
        "runtime": {"device": "cuda"}})
    found = preflight.problems(path, root=tmp_path)
    joined = "\n".join(found)
    assert "data (target)" in joined and str(tmp_path / "CUB") in joined
    assert "data (auxiliary)" in joined and str(tmp_path / "aux") in joined
    assert "resnet18 weights are neither in data/external/weights nor in the torch hub" in joined
    assert f"data.target_root ({tmp_path / 'CUB'}) is outside data/external/" in "\n".join(
        preflight.warnings(path, root=tmp_path))
    if not torch.cuda.is_available():
        assert "runtime.device is cuda but no CUDA device is visible" in joined
    assert main(["check", "--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{len(found)} problem(s)" in err and err.count("\n  - ") == len(found)


def test_weights_in_the_cache_are_enough_offline(tmp_path, monkeypatch):
    from metafgnet.models.pretrained import cache_path

    monkeypatch.setenv("METAFGNET_NO_DOWNLOAD", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = cache_path("resnet18")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    path = _params(tmp_path, {"model": {"backbone": "resnet18", "pretrained": "imagenet"}})
    assert not [p for p in preflight.problems(path, root=tmp_path) if "weights" in p]


def test_invalid_params_are_reported_key_by_key(tmp_path):
    path = _params(tmp_path, {"meta": {"order": "third", "inner_lr": -1}})
    found = preflight.problems(path)
    assert any(p.startswith("meta.order must be") for p in found)
    assert any(p.startswith("meta.inner_lr") for p in found)


def test_a_nearly_full_disk_is_a_problem(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "MIN_FREE_BYTES", 2**62)
    path = _params(tmp_path, {})
    assert any("GiB free" in p for p in preflight.problems(path, root=tmp_path))


def test_a_missing_synthetic_root_is_not_a_problem(tmp_path):
    path = _params(tmp_path, {"data": {"target": "synthetic",
                                       "target_root": str(tmp_path / "not-yet")}})
    assert preflight.problems(path, root=tmp_path) == []


def test_datasets_must_live_where_dvc_sees_them(tmp_path):
    (tmp_path / "data" / "external" / "CUB").mkdir(parents=True)
    inside = {"data": {"target": "cub", "target_root": "data/external/CUB",
                       "auxiliary": "none"}}
    path = _params(tmp_path, inside)
    assert not preflight.warnings(path, root=tmp_path)
    outside = {"data": {"target": "cub", "target_root": str(tmp_path / "elsewhere"),
                        "auxiliary": "folder", "auxiliary_root": "data/external/../aux"}}
    found = preflight.warnings(_params(tmp_path, outside), root=tmp_path)
    assert [p.split(" ")[0] for p in found] == ["data.target_root", "data.auxiliary_root"]


def test_the_check_runs_once_per_execution(tmp_path, monkeypatch):
    """The first stage of an execution checks; the later stages of the same execution find its
    mark; another execution checks again and stops on the problems it finds."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    good = _params(tmp_path, {})
    preflight.check_once("exec-a", good, tmp_path)
    marks = tmp_path / "run" / f"metafgnet-{os.getuid()}"  # shared with the agent's sockets
    assert stat.S_IMODE(marks.stat().st_mode) == 0o700
    bad = tmp_path / "bad.yaml"
    bad.write_text("meta: {order: third}\n")
    preflight.check_once("exec-a", bad, tmp_path)  # same execution: already checked
    with pytest.raises(preflight.PreflightFailed, match=r"1 problem\(s\).*\n- meta.order"):
        preflight.check_once("exec-b", bad, tmp_path)
