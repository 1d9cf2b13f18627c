"""dvc.yaml read as a file (fast; the slow audit in test_pipeline.py holds the same deps to what
each stage really imports): code deps are files, a stage's body module is a dep of its own stages
only, and every path a stage reads from another stage is named in its command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Shared by every stage (the shell, open_stage and its error exit), not one stage's body.
SHARED = {"__init__.py", "context.py", "shell.py", "failure.py", "audit.py"}


def _stages() -> dict[str, dict]:
    """The stages of dvc.yaml, ``foreach`` expanded (``finetune@joint``, ...)."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    arms = spec["vars"][0]["arms"]
    stages = {}
    for name, body in spec["stages"].items():
        if "foreach" not in body:
            stages[name] = body
            continue
        for key, item in arms.items():
            text = json.dumps(body["do"]).replace("${key}", key)
            stages[f"{name}@{key}"] = json.loads(text.replace("${item.init}", item["init"]))
    return stages


def _deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def test_code_deps_are_source_files_never_folders():
    for name, stage in _stages().items():
        for dep in _deps(stage):
            if dep.startswith("src/"):
                assert dep.endswith(".py") and (ROOT / dep).is_file(), (
                    f"{name}: code dep {dep} is not a source file (list the files it imports)")


def _imports(path: Path, module: str) -> bool:
    return re.search(rf"\bfrom {re.escape(module)} import\b", path.read_text()) is not None


def test_a_stage_body_module_is_a_dep_of_the_stages_that_run_it_only():
    stages = _stages()
    folder = ROOT / "src/metafgnet/stages"
    bodies = sorted(p.name for p in folder.glob("*_stage.py"))
    assert {"report_stage.py", "pretrain_stage.py", "meta_train_stage.py", "joint_stage.py",
            "finetune_stage.py"} <= set(bodies)
    for body in bodies:
        module = f"metafgnet.stages.{body.removesuffix('.py')}"
        runs = {name for name, stage in stages.items() if _imports(ROOT / _deps(stage)[0], module)}
        depends = {name for name, stage in stages.items()
                   if f"src/metafgnet/stages/{body}" in _deps(stage)}
        assert runs and depends == runs, f"{body}: run by {sorted(runs)}, dep of {sorted(depends)}"
    # a helper of some bodies (the training stages' model in and outputs out) is a dep of the
    # stages whose body imports it, and of no other
    helpers = sorted(p.name for p in folder.glob("*.py")
                     if p.name not in SHARED and p.name not in bodies)
    assert "training_io.py" in helpers
    for helper in helpers:
        module = f"metafgnet.stages.{helper.removesuffix('.py')}"
        users = {name for name, stage in stages.items()
                 if any(_imports(ROOT / d, module) for d in _deps(stage)
                        if d.startswith("src/metafgnet/stages/") and d.endswith("_stage.py"))}
        depends = {name for name, stage in stages.items()
                   if f"src/metafgnet/stages/{helper}" in _deps(stage)}
        assert users and depends == users, (
            f"{helper}: used by {sorted(users)}, dep of {sorted(depends)}")
    report = "src/metafgnet/stages/report_stage.py"
    assert not [n for n in ("pretrain", "meta_train") if report in _deps(stages[n])]


def test_every_path_a_stage_reads_is_named_in_its_command():
    for name, stage in _stages().items():
        deps = _deps(stage)
        assert deps[0].startswith("pipeline/") and deps[0] in stage["cmd"], name
        given = [t for t in stage["cmd"].split()[2:] if not t.startswith("-")]  # after `python`
        for dep in deps[1:]:
            # external data is reached through the params' dataset roots and the weight cache
            if dep.startswith(("src/", "data/external")):
                continue
            assert any(_under(dep, t) or _under(t, dep) for t in given), (
                f"{name} reads {dep}, which its command does not name")
