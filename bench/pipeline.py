"""Time every stage of a full pipeline run, and the cost of MLflow tracking, side by side.

Usage: ``python bench/pipeline.py [--json FILE] [--params FILE] [--no-tracking-compare]``

In a fresh copy of the repository (git + DVC, a fresh tracking database), each stage is run in
dependency order with ``dvc repro --single-item --force <stage>`` and timed (wall clock,
including the Python start-up and DVC's own overhead of about 1 s). The same is then done with
``tracking.enabled: false`` to give the tracking overhead as a ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.repo import make_repo, run  # noqa: E402


def time_stages(repo: Path, env: dict) -> list[dict]:
    names = run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], repo, env).stdout
    rows = []
    for name in names.split():
        start = time.perf_counter()
        run([sys.executable, "-m", "dvc", "repro", "--single-item", "--force", name], repo, env)
        rows.append({"stage": name, "seconds": time.perf_counter() - start})
        print(f"  {name:28s} {rows[-1]['seconds']:7.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/metafgnet-bench-pipeline"))
    parser.add_argument("--no-tracking-compare", action="store_true")
    args = parser.parse_args()
    params = yaml.safe_load(args.params.read_text())

    results = {"machine": {"cpu": platform.processor() or platform.machine(),
                           "cores": os.cpu_count(), "python": platform.python_version()}}
    variants = [("tracking on", True)] + ([] if args.no_tracking_compare else [("tracking off", False)])
    for label, enabled in variants:
        dest = args.workdir / label.replace(" ", "-")
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        repo, env = make_repo(dest, {**params, "tracking": {**params.get("tracking", {}),
                                                            "enabled": enabled}})
        print(f"{label}:", flush=True)
        rows = time_stages(repo, env)
        results[label] = {"stages": rows, "total_seconds": sum(r["seconds"] for r in rows)}
        print(f"  {'total':28s} {results[label]['total_seconds']:7.1f} s")
    if "tracking off" in results:
        ratio = results["tracking on"]["total_seconds"] / results["tracking off"]["total_seconds"]
        results["tracking_overhead_ratio"] = ratio
        print(f"tracking on / off: {ratio:.3f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
