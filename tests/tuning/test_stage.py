"""The DVC stage `tune`: opt-in (guarded by tune.enabled), declared truthfully, cheap when off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from metafgnet.params import parse_params
from metafgnet.tuning.space import SECTIONS, current_values, nest

ROOT = Path(__file__).resolve().parents[2]


def test_disabled_stage_writes_current_values_without_searching(tmp_path):
    raw = {"meta": {"inner_lr": 0.02}, "select": {"ratio": 0.5}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "METAFGNET_AUDIT": str(tmp_path / "a")}
    env.pop("METAFGNET_PARAMS", None)
    subprocess.run([sys.executable, str(ROOT / "pipeline" / "tune.py"), "--data",
                    "data/prepared/manifests"], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=120)
    best = yaml.safe_load((tmp_path / "results/tune/best_params.yaml").read_text())
    assert best == nest(current_values(parse_params(raw)))
    assert best["meta"]["inner_lr"] == 0.02 and best["select"] == {"ratio": 0.5}
    assert json.loads((tmp_path / "results/tune/summary.json").read_text())["enabled"] is False
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()
    audit = json.loads((tmp_path / "a" / "tune.json").read_text())
    assert audit["write"] and all(w.startswith("results/tune/") for w in audit["write"])
    assert not [r for r in audit["read"] if r.startswith(("data/", "models/", "results/"))]
    heavy = ("training", "models", "meta", "data", "tracking")
    assert not [m for m in audit["modules"] if any(f"metafgnet/{h}" in m for h in heavy)]


def test_dvc_stage_is_declared_and_nothing_depends_on_it():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    tune = stages["tune"]
    assert tune["outs"] == ["results/tune"]
    assert sorted(tune["params"]) == sorted(SECTIONS)
    assert {"pipeline/tune.py", "src/metafgnet/tuning/run.py", "data/prepared",
            "models/pretrain"} <= set(
        tune["deps"])
    for name, stage in stages.items():
        body = stage.get("do", stage)
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        params = [p if isinstance(p, str) else next(iter(p)) for p in body.get("params", [])]
        if name != "tune":
            assert not any(d.startswith("results/tune") for d in deps + params), name
