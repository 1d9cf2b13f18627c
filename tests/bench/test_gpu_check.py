"""The GPU check script, run in its dry-run mode: the same code on the CPU at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path), "--dry-run"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert (tmp_path / "pytest_cuda.xml").is_file()
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["config"]["device"] == "cpu"
    timing = result["timing"]
    assert set(timing) == {"ours", "ours-first", "ours+bf16", "ours-first+bf16",
                           "ours-mb4", "ours-mb2"}
    for name, rec in timing.items():
        assert rec["seconds_per_iter"] > 0 and rec["images_per_s"] > 0, name
        assert rec["peak_mem_bytes"] is not None and rec["gflops_per_iter"] > 0, name
    assert result["ratios"]["ours/ours-first seconds_per_iter"] > 1
    # exact and bounded cost more FLOPs than first order: the variants really differ
    assert timing["ours"]["gflops_per_iter"] > timing["ours-first"]["gflops_per_iter"]
    assert timing["ours-mb2"]["gflops_per_iter"] > timing["ours"]["gflops_per_iter"]
    agree = result["agreement"]
    assert 0 < agree["bf16_vs_fp32_rel_err"] < 0.2  # width-8 net at 16 px: coarse in bf16
    assert agree["fp32_vs_fp64_rel_err"] < 1e-4
    # two grid points on one (fake) device: the second leased it once the first let it go
    leases = json.loads((tmp_path / "gpu_leases.json").read_text())
    assert leases["ok"] and leases["mode"] == "one after the other" and not leases["overlap"]
    first, second = leases["points"]
    assert first["device"] == second["device"] == "fake0"
    assert second["start"] >= first["end"] and leases["second_waited_s"] > 0
