"""``metafgnet compare``: the ablation over seeds, as queued DVC experiments, summarised.

::

    metafgnet compare                                   # meta.order first vs second, seeds 0 1 2
    metafgnet compare --seeds 0 1 2 3 4 --jobs 2
    metafgnet compare --set meta.order=first,second --set select.ratio=0.5,0.8
    metafgnet compare --set meta.order=second           # a plain seed sweep (no factor)
    metafgnet compare --collect-only                    # only summarise finished points
    metafgnet compare --vary seed,split,source          # the split and source network move too

Writes ``results/compare/`` (``summary.md``, ``compare.json``, ``compare.png``/``.svg``) and
logs one MLflow run linking the executions it summarises.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from metafgnet.compare.grid import (
    DEFAULT_SEEDS,
    THREADS,
    GridError,
    experiments,
    parse_grid,
    parse_vary,
    run_grid,
)
from metafgnet.compare.grid import validate as validate_grid
from metafgnet.compare.summary import summarise, write
from metafgnet.params import load_params
from metafgnet.training.runtime import shared_threads, usable_cores


def _compare(args: argparse.Namespace) -> int:
    command = "metafgnet compare " + shlex.join(sys.argv[2:])
    out = Path(args.out)
    if args.jobs < 1:
        raise GridError(f"--jobs {args.jobs}: at least 1")
    grid = parse_grid(args.set, args.seeds, parse_vary(args.vary))
    validate_grid(grid, Path(args.params))
    params = load_params(args.params)
    if not args.collect_only:
        run_grid(grid, args.jobs, threads=_threads(grid, params.runtime.num_threads, args.jobs),
                 logs=out / "failed", poll_s=args.poll_s)
    records = experiments()
    missing = [p.name for p in grid.points() if p.name not in records]
    if missing:
        raise GridError("grid points without results (run without --collect-only): "
                        + ", ".join(missing))
    summary = summarise(grid, records)
    print(write(summary, out, command))
    if params.tracking.enabled and not args.no_mlflow:
        from metafgnet.compare.tracking import log_comparison
        from metafgnet.tracking import repo_root

        run_id = log_comparison(summary, [p.name for p in grid.points()], out, params.tracking,
                                repo_root(), command)
        print(f"MLflow run {run_id} (tag metafgnet.role = compare) links the executions")
    return 0


def _threads(grid, num_threads: int, jobs: int) -> int | None:
    """The ``runtime.num_threads`` to queue the points with when ``jobs`` of them share the
    cores (:func:`metafgnet.training.runtime.shared_threads`); None: params.yaml's value stands (or
    the grid sweeps it itself)."""
    if THREADS in {k for k, _ in grid.others} | {grid.factor}:
        return None
    threads = shared_threads(num_threads, jobs)
    if jobs > usable_cores():
        print(f"compare: --jobs {jobs} on {usable_cores()} core(s): the points' threads "
              "outnumber the cores; lower --jobs", file=sys.stderr)
    return None if threads == num_threads else threads


def register(sub) -> None:
    p = sub.add_parser("compare", help="ablation over seeds: a grid of DVC experiments, "
                                       "summarised with paired confidence intervals")
    p.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                   help="swept params (repeatable); the first with two values is compared "
                        "(default meta.order=first,second)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    p.add_argument("--vary", default="seed", metavar="SOURCES",
                   help="sources of randomness that move with each seed, among seed, split "
                        "(data.split_seed), source (pretrain.seed); default: seed alone")
    p.add_argument("--jobs", type=int, default=1,
                   help="experiments run at once; on CPU each gets runtime.num_threads capped "
                        "at cores // jobs, on GPUs each leases its own devices")
    p.add_argument("--poll-s", type=float, default=10.0, metavar="S",
                   help="seconds between looks at the queue (progress, worker restarts)")
    p.add_argument("--out", default="results/compare")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--collect-only", action="store_true", help="only summarise finished points")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the summary run")
    p.set_defaults(func=_compare)
