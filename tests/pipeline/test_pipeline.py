"""The whole pipeline on a tiny config, for real: `dvc repro`, no-op rerun, the stage graph,
repeatability across two clones and `dvc exp run -S meta.order=first`."""

from __future__ import annotations

import csv
import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest
import yaml

from metafgnet.stages.audit import code_deps
from support.repo import copy_repo, run

pytestmark = pytest.mark.slow

ARMS = ("finetune", "joint", "metafgnet", "metafgnet_selected", "metafgnet_random")


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


def _final(path: str) -> str:
    """The file an atomic write's temporary sibling (``dir/.name.<random>.tmp``) becomes."""
    return re.sub(r"(^|/)\.([^/]+)\.[^./]+\.tmp$", r"\1\2", path)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def test_pipeline_produces_metrics_and_report(tiny_pipeline):
    repo, _, _ = tiny_pipeline
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    assert set(evaluate) == set(ARMS)
    for arm in ARMS:
        assert set(evaluate[arm]) == {"test_top1", "val_top1", "test_mean_class_acc"}
        assert all(0.0 <= v <= 1.0 for v in evaluate[arm].values())
    select = json.loads((repo / "metrics/select.json").read_text())
    assert 0.0 < select["selected_fraction"] <= 1.0
    assert 0.0 <= select["selection_precision"] <= 1.0
    assert 0.0 < select["related_base_rate"] < 1.0
    assert 0.0 <= select["roc_auc"] <= 1.0 and 0.0 <= select["precision_at_related"] <= 1.0
    for stage in ("meta_train", "meta_train_selected", "meta_train_random"):
        cost = json.loads((repo / f"metrics/{stage}.json").read_text())["cost"]
        assert cost["seconds_per_iter"] > 0 and cost["images_per_s"] > 0
        assert cost["peak_memory_mib"] >= 0 and cost["memory"] == "rss_growth"
    # the control for selection: a random subset of the selected size (select.random_seed),
    # in manifest order, with the selected arm's scaled schedule
    from metafgnet.io import read_yaml
    from metafgnet.selection import random_subset, read_subset

    with (repo / "results/select/scores.tsv").open() as fh:      # every auxiliary image, in order
        auxiliary = [(row["path"], int(row["label"])) for row in csv.DictReader(fh, delimiter="\t")]
    selected = [(r.path, r.label) for r in read_subset(repo / "results/select/selected.csv")]
    control = [(r.path, r.label) for r in read_subset(repo / "models/meta_train_random/subset.csv")]
    keep = random_subset(len(auxiliary), len(selected),
                         read_yaml(repo / "params.yaml")["select"]["random_seed"])
    assert control == [a for a, k in zip(auxiliary, keep.tolist(), strict=True) if k]
    assert len(control) == len(selected) == select["selected_images"] < len(auxiliary)
    assert control != selected
    runs = {s: json.loads((repo / f"metrics/{s}.json").read_text())
            for s in ("meta_train_selected", "meta_train_random")}
    assert runs["meta_train_random"]["aux_images"] == runs["meta_train_selected"]["aux_images"]
    assert runs["meta_train_random"]["iterations"] == runs["meta_train_selected"]["iterations"]
    report = (repo / "results/report/report.md").read_text()
    for arm in ARMS:
        assert arm in report
    assert "ROC AUC" in report
    # the cost is timed on every run: named in the cached report, its figures left out
    assert "`metrics/meta_train.json`" in report and "s / meta-iteration" not in report
    from metafgnet.reporting.report import FINETUNE_CURVES, META_CURVES

    for files, (x, ys) in ((repo.glob("models/meta_train*/curves.tsv"), META_CURVES),
                           (repo.glob("models/finetune/*/curves.tsv"), FINETUNE_CURVES)):
        for path in files:  # every panel of the report's figures has its column
            header = path.read_text().splitlines()[0].split("\t")
            assert {x, *ys} <= set(header), (path, {x, *ys} - set(header))
    for figure in ("results/report/confusion.png", "results/select/score_distribution.png",
                   "results/select/top_bottom.png"):
        assert (repo / figure).stat().st_size > 0, figure
    umask = os.umask(0)
    os.umask(umask)
    for output in ("metrics/evaluate.json", "models/meta_train/model.pt",
                   "data/prepared/manifests/index.json", "data/prepared"):
        path = repo / output
        mode = (0o777 if path.is_dir() else 0o666) & ~umask   # as open() / mkdir() would
        assert stat.S_IMODE(path.stat().st_mode) == mode, output


def test_stage_and_arm_names_in_the_code_match_dvc_yaml(tiny_pipeline):
    from metafgnet.evaluation import ARMS as CODE_ARMS
    from metafgnet.stages.report_stage import PIPELINE_STAGES

    repo, env, _ = tiny_pipeline
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    assert tuple(spec["vars"][0]["arms"]) == CODE_ARMS == ARMS
    names = set(run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], repo,
                    env).stdout.split())
    assert names - {"tune"} == set(PIPELINE_STAGES)


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
        deps = stage.get("deps", [])
        outs = [o if isinstance(o, str) else next(iter(o))   # `metrics:` are outputs too
                for o in stage.get("outs", []) + stage.get("metrics", [])]
        declared = sorted(p if isinstance(p, str) else next(iter(p)) for p in stage["params"])
        assert record["sections"] == declared, f"{name}: params in dvc.yaml != params the code reads"
        for path in record["read"]:
            if _under(path, ["data", "models", "results"]) and not _under(path, outs):
                assert _under(path, deps), f"{name} reads {path}, not a declared dep"
        for path in record["write"]:
            if not (path.startswith("mlflow.db") or _under(path, ["mlartifacts", ".dvc"])):
                assert _under(_final(path), outs), f"{name} writes {path}, not a declared out"
        # code deps file by file: each module the stage imported, and (but tune, which imports
        # the training code only when tune.enabled) none it did not
        imported, declared_code = set(code_deps(record["modules"])), {
            d for d in deps if d.startswith("src/")}
        assert imported <= declared_code, f"{name}: add to its deps {sorted(imported - declared_code)}"
        if name != "tune":
            assert declared_code == imported, (
                f"{name}: remove from its deps {sorted(declared_code - imported)}")
        assert any(_under(path, outs) for path in record["write"]), f"{name} wrote no output"


def test_editing_the_report_code_leaves_the_training_stages_up_to_date(tiny_pipeline, tmp_path):
    """Code deps are files: a change to the report stage's module re-runs the report only."""
    origin, env, _ = tiny_pipeline
    repo, env = copy_repo(origin, tmp_path / "copy", env)
    env = {k: v for k, v in env.items() if k != "METAFGNET_AUDIT"}
    body = repo / "src/metafgnet/stages/report_stage.py"
    body.write_text(body.read_text() + "# edited\n")
    status = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], repo, env).stdout)
    assert set(status) == {"report"}, status
    assert {"changed deps": {"src/metafgnet/stages/report_stage.py": "modified"}} in (
        status["report"])


def test_exp_run_first_order_reruns_only_meta_training_and_downstream(two_executions):
    repo, env, stdout = two_executions
    ran = {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")}
    assert {"prepare", "pretrain", "joint", "finetune@finetune", "finetune@joint"}.isdisjoint(ran)
    assert {"meta_train", "select", "meta_train_selected", "meta_train_random",
            "finetune@metafgnet", "finetune@metafgnet_random", "evaluate"} <= ran


def test_dvc_exp_show_and_metrics_diff_put_baseline_and_experiment_side_by_side(two_executions):
    """The baseline is the execution ``make run`` saved as an experiment (its outputs are in
    this clone's cache), beside the first-order experiment."""
    repo, env, _ = two_executions
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo,
                           env).stdout)
    rows = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            rows[exp.get("name")] = exp["revs"][0]["data"]
    assert {two_executions.baseline, "first-order"} <= set(rows)
    values = {}
    for name in (two_executions.baseline, "first-order"):
        data = rows[name]
        assert data["params"]["params.yaml"]["data"]["meta"]["order"] == (
            "first" if name == "first-order" else "second")
        metrics = data["metrics"]
        for file in ("metrics/evaluate.json", "metrics/select.json", "metrics/meta_train.json"):
            assert metrics[file]["data"], f"{name}: no {file}"
        values[name] = metrics["metrics/evaluate.json"]["data"]["metafgnet"]["test_top1"]
        assert metrics["metrics/meta_train.json"]["data"]["cost"]["seconds_per_iter"] > 0
    # `dvc metrics diff` reads the same numbers
    diff = json.loads(run([sys.executable, "-m", "dvc", "metrics", "diff",
                           two_executions.baseline, "first-order", "--json", "--all"],
                          repo, env).stdout)
    cell = diff["metrics/evaluate.json"]["metafgnet.test_top1"]
    assert (cell["old"], cell["new"]) == (values[two_executions.baseline], values["first-order"])


def test_tracking_database_holds_both_orders_after_repro_and_exp_run(two_executions):
    """After `dvc repro` and `dvc exp run -S meta.order=first`, the one database holds a
    parent run per execution, a child per stage that ran, both orders told apart by the
    `meta.order` param, models logged and the best one registered."""
    from mlflow import MlflowClient

    repo, env, _ = two_executions
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
    assert {"prepare", "pretrain", "meta_train", "select", "meta_train_selected",
            "meta_train_random", "joint", *(f"finetune@{a}" for a in ARMS), "evaluate",
            "report"} <= stages[full]
    assert "prepare" not in stages[first] and "meta_train" in stages[first]
    orders = {pid: {r.data.params.get("meta.order") for r in kids if "meta.order" in r.data.params}
              for pid, kids in children.items()}
    assert orders == {full: {"second"}, first: {"first"}}
    meta = next(r for r in children[full] if r.data.tags.get("stage") == "meta_train")
    assert "meta_loss" in meta.data.metrics and "meta_grad_norm" in meta.data.metrics
    assert client.get_model_version_by_alias("metafgnet-best", "champion").version


def test_plots_diff_puts_each_experiments_figures_side_by_side(two_executions):
    repo, env, _ = two_executions
    base = two_executions.baseline
    out = run([sys.executable, "-m", "dvc", "plots", "diff", base, "first-order", "--json"],
              repo, env)
    answer = json.loads(out.stdout)
    assert not answer.get("errors"), answer["errors"]
    data = answer["data"]
    for figure in ("results/select/top_bottom.png", "results/select/score_distribution.png",
                   "results/report/meta_training.png", "results/report/finetuning.png"):
        shown = {rev for entry in data[figure] for rev in entry["revisions"]
                 if entry["type"] == "image"}
        assert shown == {base, "first-order"}, (figure, data[figure])
    assert {base, "first-order"} <= {rev for entry in data["meta-training loss"]
                                     for rev in entry["revisions"]}
