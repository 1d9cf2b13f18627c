"""The default comparison grid as a user runs it: ``make run``, then ``metafgnet compare``.

Usage: ``python bench/compare_grid.py [--json FILE] [--jobs N] [--seeds 0 1 2]
[--workdir DIR] [--keep RESULTS_DIR]``

A fresh copy of the repository (git + DVC, its own tracking database) is reproduced once with
``dvc repro`` and committed, as a clone with committed results is; then ``metafgnet compare``
runs the default grid (``meta.order`` first and second x the seeds) as queued DVC experiments.
Seed-independent stages (``prepare``, ``pretrain``) and the grid point equal to the baseline
come back from DVC's run cache. Both wall times are recorded, with the comparison's summary;
``--keep`` copies ``results/compare/`` out of the temporary repository. ``--reuse`` times the
grid again in the repository a previous run left (its baseline kept, experiments, queue entries
and the run-cache entries they added removed first), e.g. after an interrupted measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline import timed_repro  # bench/pipeline.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.repo import make_repo, run  # noqa: E402


def _reset(repo: Path) -> tuple[Path, dict, float | None, dict]:
    """The previous run's repository with only its committed baseline left."""
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    dvc = [sys.executable, "-m", "dvc"]
    run([*dvc, "queue", "stop", "--kill"], repo, env, check=False)
    run([*dvc, "queue", "remove", "--all"], repo, env, check=False)
    run([*dvc, "exp", "remove", "-A"], repo, env, check=False)
    since = float(run(["git", "log", "-1", "--format=%ct"], repo, env).stdout)
    for entry in (repo / ".dvc/cache/runs").rglob("*"):
        if entry.is_file() and entry.stat().st_mtime > since:
            entry.unlink()  # run-cache entries the interrupted grid added
    saved = repo.parent / "repro.json"
    repro = json.loads(saved.read_text()) if saved.exists() else {"seconds": None, "stages": {}}
    return repo, env, repro["seconds"], repro["stages"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/metafgnet-bench-compare"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--keep", type=Path, help="copy results/compare/ here")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the baseline a previous run left in --workdir")
    args = parser.parse_args()

    if args.reuse:
        repo, env, repro_s, stages = _reset(args.workdir / "repo")
    else:
        shutil.rmtree(args.workdir, ignore_errors=True)
        repo, env = make_repo(args.workdir / "repo", yaml.safe_load(args.params.read_text()))
        # The copy's own code, even if the checkout it came from changes while this runs.
        env = {**env, "PYTHONPATH": str(repo / "src")}
        repro_s, stages = timed_repro(repo, env)
        print(f"dvc repro: {repro_s:.1f} s", flush=True)
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-qm", "baseline results"], repo, env)
        (args.workdir / "repro.json").write_text(json.dumps({"seconds": repro_s,
                                                             "stages": stages}))

    cmd = [sys.executable, "-m", "metafgnet.cli", "compare", "--jobs", str(args.jobs),
           "--seeds", *map(str, args.seeds)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(line, end="", flush=True)
    if proc.wait() != 0:
        raise SystemExit(f"metafgnet compare failed in {repo}")
    compare_s = time.perf_counter() - start
    print(f"metafgnet compare: {compare_s:.1f} s", flush=True)

    results = {"machine": {"cpu": platform.processor() or platform.machine(),
                           "cores": os.cpu_count(), "python": platform.python_version()},
               "jobs": args.jobs, "seeds": args.seeds, "repro_seconds": repro_s,
               "repro_stage_seconds": stages, "compare_seconds": compare_s,
               "summary": json.loads((repo / "results/compare/compare.json").read_text())}
    if args.keep:
        shutil.copytree(repo / "results/compare", args.keep, dirs_exist_ok=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
