"""A stage stopped by a problem the user can fix prints one block, no traceback, and exits 2;
METAFGNET_DEBUG=1 brings the traceback back. A real stage process each time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _prepare(tmp_path: Path, params: dict, debug: bool = False,
             **extra_env: str) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "METAFGNET_DEBUG": "1" if debug else "",
           **extra_env}
    return subprocess.run([sys.executable, str(ROOT / "pipeline/prepare.py")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


MISSING_DATA = {"data": {"target": "cub", "target_root": "nowhere/CUB_200_2011"},
                "tracking": {"enabled": False}}


def test_missing_data_is_one_block_without_traceback(tmp_path):
    out = _prepare(tmp_path, MISSING_DATA)
    assert out.returncode == 2, out.stderr
    # found by the check before the execution's first stage (the stage would say the same)
    assert "error: stage 'prepare' stopped (PreflightFailed)" in out.stderr
    assert "nowhere/CUB_200_2011" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data" / "prepared").exists()


def test_invalid_params_name_the_key_without_traceback(tmp_path):
    out = _prepare(tmp_path, {"meta": {"order": "third"}, "tracking": {"enabled": False}})
    assert out.returncode == 2
    assert "meta.order must be 'first' or 'second'" in out.stderr
    assert "Traceback" not in out.stderr


def test_debug_brings_the_traceback_back(tmp_path):
    out = _prepare(tmp_path, MISSING_DATA, debug=True)
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "PreflightFailed" in out.stderr


def test_every_problem_of_an_execution_is_reported_before_its_first_stage(tmp_path):
    """Missing data AND unavailable weights, which the pipeline would meet in two different
    stages: the first stage of the execution lists both, at once, in one block."""
    params = {**MISSING_DATA, "model": {"backbone": "resnet18", "pretrained": "imagenet"}}
    out = _prepare(tmp_path, params, METAFGNET_NO_DOWNLOAD="1",
                   TORCH_HOME=str(tmp_path / "empty-hub"), METAFGNET_EXECUTION_ID="probe-1")
    assert out.returncode == 2, out.stderr
    assert "2 problem(s) found before the first stage" in out.stderr
    assert "nowhere/CUB_200_2011" in out.stderr and "resnet18 weights" in out.stderr
    assert out.stderr.count("error: stage") == 1 and "Traceback" not in out.stderr
