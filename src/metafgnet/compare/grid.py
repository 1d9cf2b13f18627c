"""The grid of a comparison: which DVC experiments it needs, which are done, and running the rest.

A grid is one compared factor with two levels (default ``meta.order`` = ``first``, ``second``),
optional further swept keys (every combination is its own condition), and seeds. Each grid point
is one DVC experiment named after its overrides (``cmp-meta_order-first-seed-1``), so a rerun
finds the points already done in ``dvc exp show`` and queues only the others; queued points
run with ``dvc queue start -j <jobs>``. They are queued without ``--force``, so stages whose
inputs a point does not change (``prepare`` and ``pretrain`` in a seed sweep, since they have
their own ``data.split_seed`` and ``pretrain.seed``) are checked out from the DVC cache, not
run again. ``vary`` names the sources of randomness that move with each seed (:data:`SOURCES`):
``seed`` alone by default; with ``split`` each point also sets ``data.split_seed`` to its seed,
with ``source`` ``pretrain.seed``, so ``prepare`` and ``pretrain`` run once per seed. Points are validated against the params schema before
anything is queued.

Sharing the machine:

- at most ``jobs`` points run at once, queue worker restarts included: a worker is started
  only when none is running or starting (:func:`workers_alive` reads DVC's worker process
  files; ``dvc queue status`` lists a worker only once it is ready, and a second ``dvc queue
  start`` meanwhile started a second worker of the same name, which took a second point);
- on the cores: points run side by side pin ``runtime.num_threads`` capped at
  ``max(1, cores // jobs)`` (:func:`metafgnet.training.runtime.shared_threads`, queued as
  ``-S runtime.num_threads=...`` when it differs from params.yaml), so their threads together
  do not outnumber the cores.
  CPU results are bit-identical only at one thread count, so the count is a param of each
  point (in ``dvc exp show`` and each stage's MLflow run), and the summary pairs points only at
  equal counts. :data:`LEDGER` records the ``jobs`` each point was queued with (its costs count
  only when run alone);
- on GPUs each point's stages lease their own devices (:mod:`metafgnet.distributed.devices`).

A point that failed or was killed (``dvc queue kill``) would stay in ``dvc exp show`` under its
name with the baseline's metrics: its queue log is saved to ``<logs>/<name>.log`` and the entry
removed (``dvc queue remove``), and the next run queues it again. A queue worker that stops
(killed, or shutting down after ``dvc queue kill`` interrupted its point) can take one more point
first, which DVC then shows running with no process to run it: seen so on two polls with no
worker alive, it is marked failed and queued again, once; fewer live workers than ``jobs`` with
points still queued are topped up.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from metafgnet.errors import UserError
from metafgnet.io import read_yaml
from metafgnet.params import ParamsError, deep_merge, parse_params

DEFAULT_FACTOR = ("meta.order", ("first", "second"))
DEFAULT_SEEDS = (0, 1, 2)
EVALUATE = "metrics/evaluate.json"
# source of randomness -> (the params key that seeds it, what it decides)
SOURCES = {"split": ("data.split_seed", "the validation split"),
           "source": ("pretrain.seed", "the source network (pretraining)"),
           "seed": ("seed", "meta-training, joint training and fine-tuning")}
THREADS = "runtime.num_threads"
LEDGER = Path(".dvc") / "tmp" / "metafgnet-compare.json"  # point name -> {"jobs": N}
WORKER_START_S = 120.0  # a started queue worker that is not running by then is started again


class GridError(RuntimeError, UserError):
    """A grid that cannot be built or run; the message says which point and what to do."""


@dataclasses.dataclass(frozen=True)
class GridPoint:
    overrides: tuple[tuple[str, str], ...]  # ((dotted key, value), ...), ``seed`` last

    @property
    def name(self) -> str:
        slug = "-".join(f"{k}-{v}" for k, v in self.overrides)
        return "cmp-" + re.sub(r"[^A-Za-z0-9_-]+", "_", slug)

    def value(self, key: str) -> str:
        return dict(self.overrides)[key]

    def set_args(self) -> list[str]:
        return [arg for k, v in self.overrides for arg in ("-S", f"{k}={v}")]


@dataclasses.dataclass(frozen=True)
class Grid:
    """``factor`` (None for a plain sweep) at its two ``levels``, every combination of the
    ``others``, every seed."""

    factor: str | None
    levels: tuple[str, ...]
    others: tuple[tuple[str, tuple[str, ...]], ...] = ()
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    vary: tuple[str, ...] = ("seed",)  # the SOURCES that move with each seed

    def points(self) -> list[GridPoint]:
        keys = [k for k, _ in self.others]
        factor = [((self.factor, level),) for level in self.levels] if self.factor else [()]
        moved = [SOURCES[s][0] for s in SOURCES if s in self.vary]  # ``seed`` last
        return [GridPoint((*f, *zip(keys, combo, strict=True), *((k, str(seed)) for k in moved)))
                for combo in itertools.product(*(v for _, v in self.others))
                for f in factor for seed in self.seeds]

    def condition(self, point: GridPoint) -> tuple[tuple[str, str], ...]:
        """The point's values of the further swept keys (one summary per condition)."""
        return tuple((k, point.value(k)) for k, _ in self.others)


def parse_vary(text: str) -> tuple[str, ...]:
    """``--vary seed,split,source`` into the sources that move with each seed, in
    :data:`SOURCES` order; ``seed`` must be one of them (it numbers the replicates)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SOURCES]
    if unknown or "seed" not in names or len(set(names)) != len(names):
        raise GridError(f"--vary {text!r}: expected distinct names among "
                        f"{', '.join(SOURCES)}, seed included (e.g. seed,split,source)")
    return tuple(s for s in SOURCES if s in names)


def parse_grid(sets: Sequence[str], seeds: Sequence[int] = DEFAULT_SEEDS,
               vary: Sequence[str] = ("seed",)) -> Grid:
    """``--set KEY=V1,V2`` options into a :class:`Grid`. The first key with exactly two values is
    the compared factor; without any ``--set``, ``meta.order=first,second``; with keys but none
    of two values, a plain sweep (no factor). ``vary``: :func:`parse_vary`'s sources; a key
    they move cannot also be swept."""
    swept: list[tuple[str, tuple[str, ...]]] = []
    for item in sets:
        key, sep, values = item.partition("=")
        key, levels = key.strip(), tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or not key or not levels:
            raise GridError(f"--set {item!r}: expected KEY=V1[,V2,...], e.g. meta.order=first,second")
        if key == "seed":
            raise GridError("--set seed=...: give the seeds with --seeds")
        if len(set(levels)) != len(levels):
            raise GridError(f"--set {item!r}: repeated value")
        swept.append((key, levels))
    if len({k for k, _ in swept}) != len(swept):
        raise GridError("--set: each key at most once")
    for key, _ in swept:
        moved = next((s for s in vary if SOURCES[s][0] == key and s != "seed"), None)
        if moved:
            raise GridError(f"--set {key}=...: --vary {moved} already sets it to each seed; "
                            f"drop one of the two")
    if not seeds or len(set(seeds)) != len(seeds):
        raise GridError(f"--seeds: distinct seeds needed, got {list(seeds)}")
    swept = swept or [(DEFAULT_FACTOR[0], DEFAULT_FACTOR[1])]
    two = next((i for i, (_, v) in enumerate(swept) if len(v) == 2), None)
    factor, levels = swept.pop(two) if two is not None else (None, ())
    return Grid(factor, tuple(levels), tuple(swept), tuple(seeds), tuple(vary))


def _nested(key: str, value: str) -> dict:
    out: dict = yaml.safe_load(value) if value.strip() else value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def validate(grid: Grid, params_file: Path) -> None:
    """Every point's params are valid (the error names the point and the key)."""
    base = read_yaml(params_file) or {}
    problems = []
    for point in grid.points():
        raw = base
        for key, value in point.overrides:
            if key.split(".")[0] not in base:
                problems.append(f"{point.name}: {key}: no such params section "
                                f"(sections: {', '.join(base)})")
                continue
            raw = deep_merge(raw, _nested(key, value))
        try:
            parse_params(raw)
        except ParamsError as exc:
            problems.append(f"{point.name}: {exc}")
    if problems:
        raise GridError("invalid grid points:\n  " + "\n  ".join(dict.fromkeys(problems)))


def dvc(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True,
                         cwd=cwd)
    if out.returncode != 0:
        raise GridError(f"dvc {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n"
                        f"{out.stderr}")
    return out.stdout


def point_threads(record: dict) -> int | None:
    """The ``runtime.num_threads`` a finished point ran with (None when its params lack it)."""
    value = ((record.get("params") or {}).get("runtime") or {}).get("num_threads")
    return None if value is None else int(value)


def _ledger(cwd: Path | None) -> dict[str, dict]:
    """The records of :data:`LEDGER` (none while it is missing or unreadable)."""
    try:
        return json.loads((Path(cwd or ".") / LEDGER).read_text())
    except (OSError, ValueError):
        return {}


def workers_alive(cwd: Path | None = None) -> int:
    """DVC queue worker processes of this repository that are running, starting ones included
    (from the process files DVC writes when it spawns them)."""
    alive = 0
    for info in (Path(cwd or ".") / ".dvc" / "tmp" / "exps" / "celery").glob(
            "**/dvc-exp-worker-*.json"):
        try:
            pid = int(json.loads(info.read_text())["pid"])
            for _ in range(20):  # empty while the process is still in its exec
                if cmdline := Path(f"/proc/{pid}/cmdline").read_bytes():
                    break
                time.sleep(0.05)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        alive += b"queue-worker" in cmdline
    return alive


def start_queue(jobs: int, cwd: Path | None = None) -> None:
    """``dvc queue start -j jobs``. Its workers outlive the command and inherit its output, so
    that goes to a file: waiting on a pipe would wait for the workers to exit."""
    with tempfile.TemporaryFile("w+") as log:
        code = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              cwd=cwd).returncode
        if code != 0:
            log.seek(0)
            raise GridError(f"dvc queue start -j {jobs} failed ({code}):\n{log.read()}")


def experiments(cwd: Path | None = None) -> dict[str, dict]:
    """Finished experiments by name: ``{"params": {...}, "metrics": {file: {...}}}``, with
    ``jobs`` and ``cores_shared`` (``jobs`` above 1) for points ``metafgnet compare`` queued
    (:data:`LEDGER`). Entries still queued or running, or failed, are left out."""
    ledger = _ledger(cwd)
    found = {}
    for baseline in json.loads(dvc("exp", "show", "--json", cwd=cwd) or "[]"):
        for exp in baseline.get("experiments") or []:
            # queued, running and failed entries carry the baseline commit's metrics files
            if ((exp.get("executor") or {}).get("state") or "success") != "success":
                continue
            rev = (exp.get("revs") or [{}])[0]
            data = rev.get("data") or {}
            metrics = {f: (m or {}).get("data") for f, m in (data.get("metrics") or {}).items()}
            if exp.get("name") and metrics.get(EVALUATE):
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                found[exp["name"]] = {"params": params, "metrics": metrics}
                if (jobs := (ledger.get(exp["name"]) or {}).get("jobs")) is not None:
                    found[exp["name"]].update(jobs=jobs, cores_shared=jobs > 1)
    return found


def _queue_states(cwd: Path | None) -> tuple[dict[str, str], int | None]:
    """Name -> state (Queued, Running, Success, Failed) of the DVC queue's entries, and the
    number of ready queue workers, active or idle (None when ``dvc queue status`` does not
    say). A name queued again beside its failed entry takes its livelier state."""
    rank = {s: i for i, s in enumerate(("Running", "Queued", "Success", "Failed"))}
    states: dict[str, str] = {}
    workers = None
    for line in dvc("queue", "status", cwd=cwd).splitlines()[1:]:
        if match := re.match(r"Worker status: (\d+) active, (\d+) idle", line):
            workers = int(match.group(1)) + int(match.group(2))
            continue
        parts = line.split()
        if len(parts) >= 3 and parts[1] != "None":
            state = next((w for w in parts[2:] if w in rank), parts[-1])
            if rank.get(state, len(rank)) < rank.get(states.get(parts[1], ""), len(rank) + 1):
                states[parts[1]] = state
    return states, workers


def _drop_failed(names: set[str], states: dict[str, str], logs: Path | None,
                 cwd: Path | None) -> list[str]:
    """Remove the queue entries of ``names`` that failed or were killed (in ``dvc exp show``
    they carry the baseline's metrics under the point's name), their logs saved first."""
    failed = sorted(n for n in names if states.get(n) == "Failed")
    for name in failed:
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            out = subprocess.run([sys.executable, "-m", "dvc", "queue", "logs", name],
                                 capture_output=True, text=True, cwd=cwd)
            (logs / f"{name}.log").write_text(out.stdout + out.stderr)
    _remove(failed, cwd)
    return failed


def _remove(names: Sequence[str], cwd: Path | None) -> None:
    """``dvc queue remove`` until the entries are gone: one a worker took but never started is
    both in DVC's queue stash and in its results, and one remove clears only the first."""
    for _ in range(2):
        if left := sorted(set(names) & set(_queue_states(cwd)[0])):
            dvc("queue", "remove", *left, cwd=cwd)


def run_grid(grid: Grid, jobs: int, cwd: Path | None = None, poll_s: float = 10.0,
             threads: int | None = None, logs: Path | None = None) -> list[str]:
    """Queue the points not done yet and run them ``jobs`` at a time; returns the names run.
    ``threads``: queue them with ``-S runtime.num_threads=threads``
    (:func:`metafgnet.training.runtime.shared_threads`).
    ``logs``: where the queue logs of failed points are saved before their entries are removed.

    Raises :class:`GridError` naming the points that did not finish.
    """
    say = functools.partial(print, flush=True)
    points = grid.points()
    done = experiments(cwd)
    todo = [p for p in points if p.name not in done]
    say(f"compare: {len(points)} grid points, {len(points) - len(todo)} already done, "
        f"{len(todo)} to run with {jobs} job(s)"
        + (f", {threads} thread(s) each" if threads is not None and todo else ""))
    if not todo:
        return []
    names = {p.name for p in todo}
    queued = _queue_states(cwd)[0]
    if dropped := _drop_failed(names, queued, None, cwd):
        say(f"compare: removed the failed queue entries of {', '.join(dropped)}; queueing again")
    pending = {n for n, s in queued.items() if s in ("Queued", "Running") and n in names}
    extra = ["-S", f"{THREADS}={threads}"] if threads is not None else []
    record = _ledger(cwd)
    for point in todo:
        if point.name not in pending:
            dvc("exp", "run", "--queue", "-n", point.name, *point.set_args(), *extra, cwd=cwd)
        record[point.name] = {"jobs": jobs}
    ledger = Path(cwd or ".") / LEDGER
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_text(json.dumps(record, indent=1, sort_keys=True))
    queue_args = {p.name: [*p.set_args(), *extra] for p in todo}
    started = None
    if not workers_alive(cwd):
        start_queue(jobs, cwd)
        started = time.monotonic()
    start, last, orphans_seen, requeued = time.monotonic(), None, set(), set()
    while True:
        all_states, ready = _queue_states(cwd)
        states = {n: s for n, s in all_states.items() if n in names}
        # progress from the queue alone: `dvc exp show` is too heavy to poll beside training
        counts = tuple(list(states.values()).count(s) for s in ("Success", "Running", "Queued"))
        alive = workers_alive(cwd)
        if alive and alive == ready:
            started = None  # every worker process is ready: none is starting
        # a worker that stops (killed, or shutting down after `dvc queue kill` interrupted it)
        # may take one more point first: DVC shows it Running with no process to run it
        orphans = {n for n, s in states.items() if s == "Running"} if not alive else set()
        if orphans and orphans == orphans_seen:  # seen twice, a poll apart: no worker is coming
            again = sorted(orphans - requeued)
            say(f"compare: {', '.join(sorted(orphans))} taken by a queue worker that stopped "
                f"before running it; " + ("queued again" if again else "given up"))
            dvc("queue", "kill", *sorted(orphans), cwd=cwd)  # no process: marked failed
            if again:
                _remove(again, cwd)
                for name in again:
                    dvc("exp", "run", "--queue", "-n", name, *queue_args[name], cwd=cwd)
                requeued.update(again)
            orphans = set()
        orphans_seen = orphans
        if counts[2] and alive < jobs and (ready or 0) >= alive and (
                started is None or time.monotonic() - started > WORKER_START_S):
            # fewer workers than jobs with points queued (DVC's workers can stop, or be
            # killed): start the missing ones, only while every live one is ready (DVC starts
            # the names it does not see, and a starting worker's twin would take a second point)
            say(f"compare: {alive} of {jobs} queue worker(s) left with {counts[2]} point(s) "
                "queued; starting the others")
            start_queue(jobs, cwd)
            started = time.monotonic()
        if counts != last:
            elapsed = time.monotonic() - start
            eta = (elapsed / counts[0] * (len(names) - counts[0])) if counts[0] else None
            say(f"compare: {counts[0]}/{len(names)} done, {counts[1]} running, {counts[2]} "
                f"queued, {elapsed / 60:.1f} min elapsed"
                + (f", about {eta / 60:.0f} min left" if eta is not None else ""))
            last = counts
        if not counts[1] and not counts[2]:
            break
        time.sleep(poll_s)
    missing = sorted(names - set(experiments(cwd)))
    if missing:
        failed = _drop_failed(set(missing), _queue_states(cwd)[0], logs, cwd)
        where = (f"their queue logs are in {logs}/<name>.log" if failed and logs is not None
                 else "see `dvc queue logs <name>`")
        raise GridError(f"grid points that did not finish ({where}; rerun `metafgnet compare` "
                        "to retry only these): " + ", ".join(missing))
    return sorted(names)
