"""Seed sweeps: queued DVC experiments over ``seed`` and a mean ± std summary per arm.

``metafgnet seeds --seeds 0 1 2 --jobs 2`` queues one experiment per seed (named
``seed-<n>``), runs the queue, checks that every experiment succeeded (``dvc exp run --run-all``
exits 0 even when one failed, so the queue status is read instead), and writes
``results/seeds/summary.{json,md}`` from ``dvc exp show --json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from metafgnet.io import write_json, write_text

ARMS = ("finetune", "joint", "metafgnet", "metafgnet_selected")
METRICS = "results/evaluate/metrics.json"


def _dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def queue_and_run(seeds: list[int], jobs: int, poll_s: float = 5.0) -> None:
    for seed in seeds:
        _dvc("exp", "run", "--queue", "--force", "-n", f"seed-{seed}", "-S", f"seed={seed}")
    _dvc("queue", "start", "-j", str(jobs))
    while True:
        status = _dvc("queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(poll_s)
    failed = [line for line in status.splitlines() if "Failed" in line]
    if failed:
        raise RuntimeError("seed experiments failed (see `dvc queue logs <name>`):\n"
                           + "\n".join(failed))


def collect(seeds: list[int]) -> dict[str, dict[str, list[float]]]:
    """Per arm and metric, the values of the ``seed-<n>`` experiments."""
    wanted = {f"seed-{s}" for s in seeds}
    values: dict[str, dict[str, list[float]]] = {a: {} for a in ARMS}
    found = set()
    for baseline in json.loads(_dvc("exp", "show", "--json").stdout):
        for exp in (baseline.get("experiments") or []):
            name = exp.get("name")
            rev = (exp.get("revs") or [{}])[0]
            if name not in wanted or not rev.get("data"):
                continue
            metrics = rev["data"].get("metrics", {}).get(METRICS, {}).get("data")
            if not metrics:
                continue
            found.add(name)
            for arm in ARMS:
                for key, value in metrics[arm].items():
                    values[arm].setdefault(key, []).append(float(value))
    missing = sorted(wanted - found)
    if missing:
        raise RuntimeError(f"no evaluate metrics for experiments {missing} in `dvc exp show`")
    return values


def summarise(values: dict[str, dict[str, list[float]]], out: Path) -> str:
    summary = {arm: {k: {"mean": statistics.fmean(v), "std": statistics.pstdev(v), "n": len(v)}
                     for k, v in metrics.items()} for arm, metrics in values.items()}
    write_json(out / "summary.json", summary)
    lines = ["| arm | test top-1 (%) mean ± std | val top-1 (%) mean ± std | seeds |",
             "|---|---:|---:|---:|"]
    for arm, m in summary.items():
        t, v = m["test_top1"], m["val_top1"]
        lines.append(f"| {arm} | {100 * t['mean']:.2f} ± {100 * t['std']:.2f} | "
                     f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f} | {t['n']} |")
    text = "# Seed sweep\n\n" + "\n".join(lines) + "\n"
    write_text(out / "summary.md", text)
    return text


def _seeds_cmd(args: argparse.Namespace) -> int:
    if not args.collect_only:
        queue_and_run(args.seeds, args.jobs)
    print(summarise(collect(args.seeds), Path(args.out)))
    return 0


def register(sub) -> None:
    p = sub.add_parser("seeds", help="queue DVC experiments over seeds; mean ± std per arm")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1, help="experiments run in parallel")
    p.add_argument("--out", default="results/seeds")
    p.add_argument("--collect-only", action="store_true", help="only summarise finished runs")
    p.set_defaults(func=_seeds_cmd)
