"""Two grid points on the GPUs of this machine: each sets up its runtime as a stage does
(:func:`metafgnet.training.setup_runtime`, which leases a GPU of its own), holds it for a while
with memory allocated on it, and reports when. With one GPU the second point waits for the first
(one after the other); with two or more they run side by side on different GPUs.

    python bench/gpu_leases.py --out OUT_DIR [--hold-s 3] [--dry-run]

Writes ``OUT_DIR/gpu_leases.json``: the visible devices, each point's device and interval, and
whether the points overlapped; exits 1 when two points shared a GPU at the same time. ``--dry-run``
(no GPU): the same processes lease among a fake device list (one device) and allocate nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

FAKE = ["fake0"]


def _point(index: int, hold_s: float, dry: bool, queue) -> None:
    start = time.time()
    if dry:
        from metafgnet.distributed.devices import hold_devices

        device = hold_devices(1, FAKE).devices[0]
    else:
        import torch

        from metafgnet.params import RuntimeParams
        from metafgnet.training import setup_runtime

        dev = setup_runtime(RuntimeParams(device="cuda", num_threads=1), seed=index)
        block = torch.ones(64 * 2**20 // 4, device=dev)  # 64 MiB held while the point runs
        device = f"{dev} ({os.environ.get('CUDA_VISIBLE_DEVICES', 'all visible')})"
    got = time.time()
    time.sleep(hold_s)
    if not dry:
        torch.cuda.synchronize(dev)
        del block
    queue.put({"point": index, "device": device, "asked": start, "start": got,
               "end": time.time()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--hold-s", type=float, default=3.0)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    if args.dry_run:
        visible = FAKE
    else:
        from metafgnet.distributed.devices import visible_devices

        visible = visible_devices()
        if not visible:
            print("gpu_leases: no CUDA device visible; use --dry-run", file=sys.stderr)
            return 2
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_point, args=(i, args.hold_s, args.dry_run, queue))
             for i in range(2)]
    for proc in procs:
        proc.start()
    points = sorted((queue.get(timeout=600) for _ in procs), key=lambda p: p["start"])
    for proc in procs:
        proc.join()
    first, second = points
    overlap = second["start"] < first["end"]
    shared = overlap and first["device"] == second["device"]
    result = {"visible": visible, "points": points, "overlap": overlap,
              "mode": "side by side" if overlap else "one after the other",
              "second_waited_s": round(second["start"] - second["asked"], 3),
              "dry_run": args.dry_run, "ok": not shared}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_leases.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"gpu_leases: two points on {len(visible)} device(s) ran {result['mode']}"
          + ("" if result["ok"] else ": SHARED A GPU AT ONCE"))
    return 0 if result["ok"] and all(p.exitcode == 0 for p in procs) else 1


if __name__ == "__main__":
    sys.exit(main())
