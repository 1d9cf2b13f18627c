"""Real git + DVC repositories holding the project's pipeline, for end-to-end tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "synthetic": {"image_size": 16, "target_classes": 4, "train_per_class": 6,
                  "test_per_class": 4, "related_classes": 3, "unrelated_classes": 3,
                  "aux_per_class": 6},
    "data": {"image_size": 16, "resize": 18, "val_fraction": 0.34},
    "model": {"width": 4},
    "pretrain": {"epochs": 1, "batch_size": 16, "milestones": []},
    "meta": {"iterations": 4, "batch_size": 4, "aux_batch_size": 8, "milestones": [2],
             "log_every": 2},
    "select": {"batch_size": 64},
    "joint": {"epochs": 1, "batch_size": 8, "milestones": []},
    "finetune": {"epochs": 2, "batch_size": 8, "milestones": [1]},
}


def tiny_params() -> dict:
    from metafgnet.io import read_yaml
    from metafgnet.params import deep_merge

    return deep_merge(read_yaml(ROOT / "params.yaml"), TINY)


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def make_repo(dest: Path, params: dict, source: Path = ROOT) -> tuple[Path, dict]:
    """Copy the pipeline's code (from ``source``, default this checkout) into a fresh git + DVC
    repo at ``dest`` with ``params``."""
    dest.mkdir(parents=True)
    for name in ("src", "pipeline"):
        shutil.copytree(source / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(source / "dvc.yaml", dest / "dvc.yaml")
    shutil.copy(source / ".gitignore", dest / ".gitignore")
    for readme in ("data/external/README.md", "data/external/weights/README.md"):
        if (source / readme).is_file():  # the external-data dependencies exist
            (dest / readme).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / readme, dest / readme)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_TRACKING_URI": f"sqlite:///{dest / 'mlflow.db'}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("DVC_ROOT", None)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "tiny pipeline"]):
        run(cmd, dest, env)
    return dest, env


def copy_repo(src: Path, dest: Path, env: dict) -> tuple[Path, dict]:
    """A copy of a test repository (git, DVC cache, tracking database; not DVC's temporary
    files) with its own tracking URI, so a test can change it without touching ``src``."""
    skip = src / ".dvc" / "tmp"
    shutil.copytree(src, dest, ignore=lambda d, names: names if Path(d) == skip else [])
    return dest, {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{dest / 'mlflow.db'}"}


def make_run_commands(makefile: Path = ROOT / "Makefile") -> list[str]:
    """The DVC commands of the Makefile's ``run`` recipe, as the shell runs them (``$(BIN)/``
    dropped: a test repository's PATH has the virtualenv's bin first; ``$$`` is make's ``$``).
    Its ``metafgnet check`` also runs before the first stage of every execution."""
    lines = makefile.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    commands = [c.replace("$(BIN)/", "").replace("$$", "$") for c in recipe
                if c.startswith("$(BIN)/dvc ")]
    assert commands and commands[0] == "dvc repro", f"unexpected `make run` recipe: {recipe}"
    return commands


def make_run(repo: Path, env: dict) -> tuple[str, subprocess.CompletedProcess]:
    """``make run`` in a test repository: ``dvc repro``, then the execution saved as a DVC
    experiment. Returns the experiment's name and the output of ``dvc repro``."""
    results = [run(["bash", "-c", command], repo, env) for command in make_run_commands()]
    saved = re.search(r"saved as: (\S+)", results[-1].stdout + results[-1].stderr)
    assert saved, f"`make run` saved no experiment: {results[-1].stdout}{results[-1].stderr}"
    return saved.group(1), results[0]


def exp_ref(repo: Path, env: dict, name: str) -> str:
    """The git ref (``refs/exps/...``) of the DVC experiment ``name``."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo, env).stdout
    found = [r for r in refs.split() if r.endswith("/" + name)]
    assert len(found) == 1, f"experiment {name!r}: refs {found}"
    return found[0]
