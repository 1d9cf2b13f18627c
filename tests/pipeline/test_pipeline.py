"""The whole pipeline on a tiny config, for real: `dvc repro`, no-op rerun, the stage graph,
repeatability across two clones and `dvc exp run -S meta.order=first`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from support.repo import make_repo, run, tiny_params

pytestmark = pytest.mark.slow

ARMS = ("finetune", "joint", "metafgnet", "metafgnet_selected")
# Modules whose code cannot change a stage's outputs, so they are not stage deps: where results
# are logged (tracking), provenance tags, and the audit hook that writes this test's records.
OBSERVATIONAL = ("src/metafgnet/tracking", "src/metafgnet/provenance.py",
                 "src/metafgnet/stages/audit.py", "src/metafgnet/__init__.py")


def _stages(repo: Path, env: dict) -> dict[str, dict]:
    """dvc.yaml stages with foreach expanded (`finetune@joint`, ...)."""
    out = run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], repo, env)
    names = out.stdout.split()
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    arms = spec["vars"][0]["arms"]
    stages = {}
    for name in names:
        base, _, key = name.partition("@")
        body = spec["stages"][base]
        if key:
            text = json.dumps(body["do"]).replace("${key}", key)
            text = text.replace("${item.init}", arms[key]["init"])
            body = json.loads(text)
        stages[name] = body
    return stages


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def test_pipeline_produces_metrics_and_report(tiny_pipeline):
    repo, _, _ = tiny_pipeline
    evaluate = json.loads((repo / "results/evaluate/metrics.json").read_text())
    assert set(evaluate) == set(ARMS)
    for arm in ARMS:
        assert set(evaluate[arm]) == {"test_top1", "val_top1", "test_mean_class_acc"}
        assert all(0.0 <= v <= 1.0 for v in evaluate[arm].values())
    select = json.loads((repo / "results/select/metrics.json").read_text())
    assert 0.0 < select["selected_fraction"] <= 1.0
    assert 0.0 <= select["selection_precision"] <= 1.0
    assert 0.0 < select["related_base_rate"] < 1.0
    report = (repo / "results/report/report.md").read_text()
    for arm in ARMS:
        assert arm in report
    assert (repo / "results/report/confusion.png").stat().st_size > 0


def test_second_repro_is_a_noop(tiny_pipeline):
    repo, env, _ = tiny_pipeline
    out = run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert "Running stage" not in out.stdout
    status = run([sys.executable, "-m", "dvc", "status"], repo, env)
    assert "up to date" in status.stdout


def test_stage_graph_matches_what_the_code_reads_and_writes(tiny_pipeline):
    repo, env, _ = tiny_pipeline
    audit = Path(env["METAFGNET_AUDIT"])
    for name, stage in _stages(repo, env).items():
        record = json.loads((audit / f"{name}.json").read_text())
        deps, outs = stage.get("deps", []), stage.get("outs", [])
        declared = sorted(p if isinstance(p, str) else next(iter(p)) for p in stage["params"])
        assert record["sections"] == declared, f"{name}: params in dvc.yaml != params the code reads"
        for path in record["read"]:
            if _under(path, ["data", "models", "results"]) and not _under(path, outs):
                assert _under(path, deps), f"{name} reads {path}, not a declared dep"
        for path in record["write"]:
            if not (path.startswith("mlflow.db") or _under(path, ["mlartifacts", ".dvc"])):
                assert _under(path, outs), f"{name} writes {path}, not a declared out"
        for module in record["modules"]:
            if not _under(module, list(OBSERVATIONAL)):
                assert _under(module, deps), f"{name} imports {module}, not a declared dep"
        assert any(_under(path, outs) for path in record["write"]), f"{name} wrote no output"


def test_prepare_outputs_are_identical_across_two_clones(tiny_pipeline, tmp_path):
    repo, env, _ = tiny_pipeline
    other, other_env = make_repo(tmp_path / "clone", tiny_params())
    run([sys.executable, "-m", "dvc", "repro"], other, other_env)
    lock_a = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    lock_b = yaml.safe_load((other / "dvc.lock").read_text())["stages"]
    assert lock_a["prepare"]["outs"] == lock_b["prepare"]["outs"]
    # same params and seed: identical numbers on CPU, end to end
    for rel in ("results/evaluate/metrics.json", "results/select/metrics.json"):
        assert (repo / rel).read_text() == (other / rel).read_text(), rel


def test_exp_run_first_order_reruns_only_meta_training_and_downstream(tiny_pipeline):
    repo, env, _ = tiny_pipeline
    out = run([sys.executable, "-m", "dvc", "exp", "run", "-n", "first-order",
               "-S", "meta.order=first"], repo, env)
    ran = {line.split("'")[1] for line in out.stdout.splitlines() if line.startswith("Running stage")}
    assert {"prepare", "pretrain", "joint", "finetune@finetune", "finetune@joint"}.isdisjoint(ran)
    assert {"meta_train", "select", "meta_train_selected", "finetune@metafgnet", "evaluate"} <= ran
    show = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo, env).stdout)
    text = json.dumps(show)
    assert "first-order" in text and '"order": "first"' in text and '"order": "second"' in text


def test_tracking_database_holds_both_orders_after_repro_and_exp_run(tiny_pipeline):
    """After `dvc repro` and `dvc exp run -S meta.order=first` (previous test), the one
    database holds a parent run per execution, a child per stage that ran, both orders told
    apart by the `meta.order` param, models logged and the best one registered."""
    from mlflow import MlflowClient

    repo, env, _ = tiny_pipeline
    if "first-order" not in run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"],
                                repo, env).stdout:
        run([sys.executable, "-m", "dvc", "exp", "run", "-n", "first-order",
             "-S", "meta.order=first"], repo, env)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("metafgnet")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("metafgnet.role") == "pipeline"]
    assert len(parents) == 2
    assert {p.info.status for p in parents} == {"FINISHED"}
    children = {p.info.run_id: [r for r in runs
                                if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
                for p in parents}
    stages = {pid: {r.data.tags.get("stage") for r in kids}
              for pid, kids in children.items()}
    full = next(pid for pid, s in stages.items() if "prepare" in s)
    first = next(pid for pid in stages if pid != full)
    assert {"prepare", "pretrain", "meta_train", "select", "meta_train_selected", "joint",
            *(f"finetune@{a}" for a in ARMS), "evaluate", "report"} <= stages[full]
    assert "prepare" not in stages[first] and "meta_train" in stages[first]
    orders = {pid: {r.data.params.get("meta.order") for r in kids if "meta.order" in r.data.params}
              for pid, kids in children.items()}
    assert orders == {full: {"second"}, first: {"first"}}
    meta = next(r for r in children[full] if r.data.tags.get("stage") == "meta_train")
    assert "meta_loss" in meta.data.metrics and "meta_grad_norm" in meta.data.metrics
    assert client.get_model_version_by_alias("metafgnet-best", "champion").version
