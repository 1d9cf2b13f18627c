"""Scale-out costs on this machine, side by side in one run: two local nodes against one node
of two processes, and tuning on PostgreSQL against sqlite.

Usage: ``python bench/scale.py [--rounds 2] [--trials 8] [--json FILE]``

1. **Nodes.** The tested multi-node worker (``tests/distributed/multinode_worker.py``: the
   small BatchNorm net meta-trained data-parallel over two ranks) started as one torchrun
   agent of two processes (``runtime.nproc: 2``, the plain start re-executing itself) and as two
   agents of one process each meeting at a c10d rendezvous on 127.0.0.1 (the per-node command
   of :func:`metafgnet.distributed.launch.node_command`), in mirrored order (1 2 2 1 for two
   rounds) so a drift of the machine's speed cancels out. Wall time from the start to the last
   agent's exit: start-up and rendezvous included, as a user sees it. Each run's final weights
   are compared with the one-agent run's (bit-identical or not).
2. **Tuning.** ``metafgnet tune --workers 2 --n-trials N`` on the tiny tuning setup of the tests
   (synthetic 16 px data, width-4 model), once with a sqlite study file and once with a study in
   a throw-away PostgreSQL cluster (``tests/support/postgres.py``; skipped, with the reason,
   without PostgreSQL). Trials per minute are counted in the study: finished trials over the
   span from the first trial's start to the last one's end (start-up excluded); the command's
   wall time is shown beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import postgres  # noqa: E402
from support.servers import free_port  # noqa: E402

WORKER = ROOT / "tests" / "distributed" / "multinode_worker.py"
LAYOUTS = {"1 node x 2 processes": (2, 1), "2 nodes x 1 process": (1, 2)}
TINY = runpy.run_path(str(ROOT / "tests" / "tuning" / "conftest.py"))["TINY"]  # the tests' tiny setup


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               MLFLOW_DISABLE_TELEMETRY="true")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src"),
                                         env.get("PYTHONPATH", "")])
    return env


def run_layout(nproc: int, nnodes: int, out: Path) -> float:
    """Wall seconds of one multi-node worker run in ``out``."""
    from metafgnet.distributed.launch import node_command

    out.mkdir(parents=True)
    start = time.perf_counter()
    if nnodes == 1:  # the plain start, as a stage with runtime.nproc: 2
        subprocess.run([sys.executable, str(WORKER), str(out), str(nproc), "1", "torchrun"],
                       env=_env(), check=True, capture_output=True, cwd=ROOT)
    else:
        cmd = node_command([str(WORKER), str(out), str(nproc), str(nnodes), "torchrun"],
                           nproc=nproc, nnodes=nnodes, endpoint=f"127.0.0.1:{free_port()}",
                           rdzv_id=uuid.uuid4().hex[:8])
        agents = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, cwd=ROOT) for _ in range(nnodes)]
        if any(a.wait() != 0 for a in agents):
            raise RuntimeError(f"an agent of {cmd} failed")
    return time.perf_counter() - start


def same_weights(a: Path, b: Path) -> bool:
    import torch

    sa, sb = (torch.load(p / "rank0.pt", weights_only=False)["state"] for p in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def nodes(rounds: int, work: Path) -> dict:
    names = list(LAYOUTS)
    order = [n for r in range(rounds) for n in (names if r % 2 == 0 else names[::-1])]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    identical = True
    for i, name in enumerate(order):
        out = work / f"nodes-{i}"
        seconds[name].append(run_layout(*LAYOUTS[name], out))
        identical &= same_weights(out, work / "nodes-0")
        print(f"{name:22s} {seconds[name][-1]:6.1f} s", flush=True)
    return {"order": order, "seconds": seconds,
            "median_s": {n: statistics.median(v) for n, v in seconds.items()},
            "bit_identical": identical}


def tiny_setup(work: Path) -> tuple[dict, Path, Path]:
    """Synthetic data, manifests and a pretrained width-4 model, as the tuning tests build."""
    import torch

    from metafgnet.data import ImageDataset, generate_synthetic, prepare_manifests, train_transform
    from metafgnet.models import build_model
    from metafgnet.models.files import save_model
    from metafgnet.params import deep_merge, parse_params, to_dict
    from metafgnet.training import LoopRuntime, pretrain, setup_runtime

    raw = deep_merge(to_dict(parse_params({})), TINY)
    raw = deep_merge(raw, {"data": {"target_root": str(work / "synthetic" / "target"),
                                    "auxiliary_root": str(work / "synthetic" / "auxiliary")}})
    params = parse_params(raw)
    device = setup_runtime(params.runtime, params.seed)
    generate_synthetic(params.synthetic, work / "synthetic")
    data = prepare_manifests(params, work / "prepared")
    model = build_model(params.model, len(data.target_classes), len(data.auxiliary_classes))
    aux = ImageDataset(data.auxiliary, data.root("auxiliary"),
                       train_transform(params.data, "random_resized_crop"))
    pretrain(model, aux, params.pretrain, LoopRuntime(device=device, seed=params.seed))
    init = work / "pretrain" / "model.pt"
    save_model(init, model, to_dict(params.model), {"seed": params.seed}, "pretrain")
    torch.set_num_threads(os.cpu_count() or 1)
    return raw, work / "prepared", init


def tune_once(name: str, url: str, trials: int, raw: dict, data: Path, init: Path,
              work: Path) -> dict:
    import optuna

    params_file = work / f"params-{name}.yaml"
    params_file.write_text(yaml.safe_dump(
        {**raw, "tune": {**raw["tune"], "storage": url, "study_name": f"bench-{name}"}},
        sort_keys=False))
    env = {**_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "metafgnet.cli", "tune", "--params", str(params_file),
                    "--workers", "2", "--n-trials", str(trials), "--out", str(work / f"out-{name}"),
                    "--data", str(data), "--init", str(init)],
                   env=env, check=True, capture_output=True, cwd=work)
    wall = time.perf_counter() - start
    done = [t for t in optuna.load_study(study_name=f"bench-{name}", storage=url).get_trials()
            if t.state.name in ("COMPLETE", "PRUNED")]
    span = (max(t.datetime_complete for t in done)
            - min(t.datetime_start for t in done)).total_seconds()
    return {"trials": len(done), "trial_span_s": span, "wall_s": wall,
            "trials_per_min": 60 * len(done) / span,
            "workers": sorted({t.user_attrs.get("worker") for t in done})}


def tuning(trials: int, work: Path) -> dict:
    raw, data, init = tiny_setup(work)
    out = {"sqlite": tune_once("sqlite", f"sqlite:///{work / 'optuna.db'}", trials, raw, data,
                               init, work)}
    reason = postgres.unavailable()
    if reason:
        out["postgresql"] = {"skipped": reason}
        return out
    with postgres.cluster() as pg:
        out["postgresql"] = tune_once("postgresql", pg.create_database("bench"), trials, raw,
                                      data, init, work)
    return out


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="metafgnet-scale-")))
        result = {"machine": {"cpu": cpu_model(),
                              "cores": os.cpu_count(), "python": platform.python_version()},
                  "nodes": nodes(args.rounds, work), "tuning": tuning(args.trials, work)}
    n = result["nodes"]
    print("\nmachine:", result["machine"])
    print("\nnodes (wall s, median):", ", ".join(f"{k} {v:.1f}" for k, v in n["median_s"].items()),
          "| bit-identical:", n["bit_identical"])
    for name, t in result["tuning"].items():
        print(f"tuning {name:10s}", t if "skipped" in t else
              f"{t['trials']} trials, {t['trials_per_min']:.1f} trials/min "
              f"(span {t['trial_span_s']:.1f} s, command {t['wall_s']:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
