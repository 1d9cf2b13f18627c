"""The committed baseline is consistent: on a fresh clone `dvc status` finds every stage's code
and params as the committed `dvc.lock` recorded them (only outputs missing, since a clone has no
cache), and the committed metrics files are the ones that lock names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTPUT_ROOTS = ("data/", "models/", "results/", "tune/")
pytestmark = pytest.mark.slow


def test_fresh_clone_dvc_status_reports_only_missing_outputs(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    status = json.loads(out.stdout or "{}")
    stale = []
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):
                stale.append(f"{stage}: {change}")  # e.g. "changed command"
                continue
            for kind, paths in change.items():
                for path, what in paths.items():
                    missing_output = (what in ("deleted", "not in cache")
                                      and path.startswith(OUTPUT_ROOTS))
                    if not missing_output:
                        stale.append(f"{stage}: {kind} {path}: {what}")
    assert not stale, ("the committed dvc.lock does not match the committed tree (run the "
                       "pipeline and commit dvc.lock and metrics/):\n" + "\n".join(stale))
