"""One rank against two on this machine's CPU: the training stages' wall times, side by side.

Usage: ``python bench/ranks.py [--overrides bench/short_pipeline.yaml] [--rounds 2]
[--json FILE]``

A fresh copy of the repository (git + DVC, tracking off) is prepared and pretrained once; then
``pretrain`` and ``meta_train`` are forced to run again (``dvc repro -f -s <stage>``) with
``runtime.nproc`` 1 and 2, in mirrored order (1 2 2 1 for two rounds) so a drift of the
machine's speed cancels out of the ratio. With two ranks each pins ``num_threads // 2`` threads
(``metafgnet.training.runtime.threads_per_process``). Wall time includes start-up (and
``torchrun``'s rendezvous for two ranks), as a user of ``dvc exp run -S runtime.nproc=2`` sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.repo import make_repo  # noqa: E402

STAGES = ("pretrain", "meta_train")


def _set_nproc(repo: Path, nproc: int) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["runtime"]["nproc"] = nproc
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _timed(cmd: list[str], repo: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--overrides", type=Path, default=ROOT / "bench" / "short_pipeline.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/metafgnet-bench-ranks"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from metafgnet.params import deep_merge

    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                        yaml.safe_load(args.overrides.read_text()) or {})
    params["tracking"]["enabled"] = False
    subprocess.run(["rm", "-rf", str(args.workdir)], check=True)
    repo, env = make_repo(args.workdir, params)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "repro", "pretrain"], cwd=repo, env=env, check=True,
                   capture_output=True)
    order = [n for r in range(args.rounds) for n in ((1, 2) if r % 2 == 0 else (2, 1))]
    times: dict[int, dict[str, list[float]]] = {1: {}, 2: {}}
    for nproc in order:
        _set_nproc(repo, nproc)
        for stage in STAGES:
            seconds = _timed([*dvc, "repro", "-f", "-s", stage], repo, env)
            times[nproc].setdefault(stage, []).append(seconds)
            print(f"nproc {nproc} {stage:12s} {seconds:7.1f} s", flush=True)
    result = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "num_threads": params["runtime"]["num_threads"]},
              "order": order, "seconds": times,
              "median": {n: {s: statistics.median(v) for s, v in t.items()}
                         for n, t in times.items()}}
    result["ratio_2_to_1"] = {s: result["median"][2][s] / result["median"][1][s] for s in STAGES}
    for s in STAGES:
        print(f"{s:12s} 1 rank {result['median'][1][s]:7.1f} s   2 ranks "
              f"{result['median'][2][s]:7.1f} s   ratio {result['ratio_2_to_1'][s]:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
