"""The whole pipeline as `make run` runs it, and what MLflow tracking adds, side by side.

Usage: ``python bench/pipeline.py [--json FILE] [--params FILE] [--rounds N]
[--variants agent,off,inline,base] [--base REV] [--overrides FILE]``

Each variant is a fresh copy of the repository (git + DVC, its own tracking database) reproduced
with one ``dvc repro``, as ``make run`` does:

* ``agent``: tracking on, the default (one tracking agent per execution, see
  ``metafgnet.tracking.agent``);
* ``off``: ``tracking.enabled: false``;
* ``inline``: tracking on with ``tracking.agent: false`` (every stage process imports MLflow);
* ``base``: the code and ``params.yaml`` of git revision ``--base`` (tracking as there), so
  ``--variants agent,base --base <rev>`` measures what the changes since ``<rev>`` cost.

``--overrides FILE`` (YAML) is merged into every variant's params (e.g. fewer iterations, to
time a shorter pipeline).

Variants run in mirrored order (``agent off inline inline off agent`` for two rounds), so a
drift of the machine's speed cancels out of the ratios. A stage's time runs from DVC's
``Running stage`` line to the next one (or to the end), so it includes Python start-up and
DVC's own bookkeeping. Model-logging times are the ones the runs recorded themselves (metric
``tracking/log_model_seconds``: as the stage waited for each ``log_model``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.repo import make_repo  # noqa: E402

VARIANTS = {"agent": {"enabled": True, "agent": True},
            "off": {"enabled": False},
            "inline": {"enabled": True, "agent": False},
            "base": {}}
_STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


def timed_repro(repo: Path, env: dict) -> tuple[float, dict[str, float]]:
    """Wall time of one ``dvc repro`` and of each stage in it."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    marks: list[tuple[str, float]] = []
    for line in proc.stdout:
        if match := _STAGE_LINE.match(line):
            marks.append((match.group(1), time.perf_counter()))
    if proc.wait() != 0:
        raise SystemExit(f"dvc repro failed in {repo}")
    end = time.perf_counter()
    stages = {name: (marks[i + 1][1] if i + 1 < len(marks) else end) - t
              for i, (name, t) in enumerate(marks)}
    return end - start, stages


def _export(rev: str, dest: Path) -> Path:
    """The files of git revision ``rev`` in a fresh folder ``dest``."""
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def model_log_seconds(repo: Path) -> list[float]:
    """Every ``tracking/log_model_seconds`` value recorded in the variant's database."""
    db = repo / "mlflow.db"
    if not db.exists():
        return []
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    values = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            values += [m.value for m in
                       client.get_metric_history(run.info.run_id, "tracking/log_model_seconds")]
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/metafgnet-bench-pipeline"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variants", default="agent,off",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--base", help="git revision of the base variant")
    parser.add_argument("--overrides", type=Path, help="YAML merged into every variant's params")
    args = parser.parse_args()
    from metafgnet.params import deep_merge

    overrides = yaml.safe_load(args.overrides.read_text()) if args.overrides else {}
    params = deep_merge(yaml.safe_load(args.params.read_text()), overrides)
    names = args.variants.split(",")
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    order = [n for r in range(args.rounds) for n in (names if r % 2 == 0 else names[::-1])]

    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(),
                                 "cores": os.cpu_count(), "python": platform.python_version()},
                     "order": order, "runs": []}
    if "base" in names and not args.base:
        parser.error("the base variant needs --base REV")
    base_code = _export(args.base, args.workdir / "base-code") if "base" in names else None
    for i, name in enumerate(order):
        dest = args.workdir / f"{i}-{name}"
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        if name == "base":
            own = deep_merge(yaml.safe_load((base_code / "params.yaml").read_text()), overrides)
            repo, env = make_repo(dest, own, source=base_code)
        else:
            tracking = {**params.get("tracking", {}), **VARIANTS[name]}
            repo, env = make_repo(dest, {**params, "tracking": tracking})
        total, stages = timed_repro(repo, env)
        logs = model_log_seconds(repo)
        results["runs"].append({"variant": name, "total_seconds": total, "stages": stages,
                                "log_model_seconds": logs})
        extra = f", log_model max {max(logs):.2f} s" if logs else ""
        print(f"{name:7s} {total:7.1f} s{extra}", flush=True)

    totals = {n: sum(r["total_seconds"] for r in results["runs"] if r["variant"] == n)
              for n in names}
    results["totals"] = totals
    for ref in ("off", "base"):
        if ref in totals:
            results[f"ratios_to_{ref}"] = {n: totals[n] / totals[ref] for n in names if n != ref}
            for n, ratio in results[f"ratios_to_{ref}"].items():
                print(f"{n} / {ref}: {ratio:.3f}x")
    stage_names = list(results["runs"][0]["stages"])
    results["median_stage_seconds"] = {
        n: {s: statistics.median(r["stages"].get(s, 0.0) for r in results["runs"]
                                 if r["variant"] == n) for s in stage_names} for n in names}
    print(f"{'stage':28s}" + "".join(f"{n:>9s}" for n in names))
    for s in stage_names:
        print(f"{s:28s}" + "".join(f"{results['median_stage_seconds'][n][s]:9.1f}"
                                   for n in names))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
