"""Benchmark sample-selection scoring: images/s of :func:`metafgnet.selection.score_auxiliary`.

Scoring (docs/method.md, stage 3) runs the stage-2 model in eval mode over the WHOLE auxiliary set
(10,320 L-Bird classes, ~1.2 M ImageNet images), so its throughput bounds the selection stage.
Configurations:

- CPU: the small residual net (width 32) at 32 px, the CI-sized model;
- CUDA (when available): ResNet-34 at 224 px, 200 target + 10,320 source classes, float32 and
  bf16 autocast, contiguous and channels-last, with pinned memory and loader workers.

Each configuration runs in a fresh subprocess (``--worker``): one warm-up pass, then the median
of timed passes over ``--images`` images. The dataset is an in-memory pool of random images
indexed cyclically, so the numbers are model + ``DataLoader`` collation + host-to-device copy,
not JPEG decoding. ``model_only_images_per_s`` times the forward on a batch already on the
device: the gap to ``images_per_s`` is the input pipeline's cost.

    .venv/bin/python bench/selection_throughput.py --json /tmp/selection_throughput.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from harness import machine_facts, spawn
from metafgnet.models import build_model
from metafgnet.params import ModelParams
from metafgnet.selection import score_auxiliary


class ImagePool(Dataset):
    """``n`` items cycling over ``pool`` random images ``(3, size, size)``: nearly free to load."""

    def __init__(self, n: int, size: int, pool: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(pool, 3, size, size, generator=g)  # (P, C, H, W)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.images[i % len(self.images)], 0


# --------------------------------------------------------------------------- measurement
def run_worker(cfg: dict) -> dict:
    """Time one configuration in this (fresh) process; returns its record."""
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg["cudnn_benchmark"]
    torch.manual_seed(0)
    params = ModelParams(backbone=cfg["model"], width=cfg.get("width", 32))
    model = build_model(params, cfg["target_classes"], cfg["source_classes"]).to(device).eval()
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cfg["amp"] else \
        contextlib.nullcontext
    ds = ImagePool(cfg["images"], cfg["image_size"])
    loader_kwargs = {"num_workers": cfg["workers"], "pin_memory": cfg["pin_memory"]}
    if cfg["workers"]:
        loader_kwargs["prefetch_factor"] = 4
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def score(dataset) -> torch.Tensor:
        with amp():
            return score_auxiliary(model, dataset, device=device, batch_size=cfg["batch"],
                                   loader_kwargs=loader_kwargs)

    warm = ImagePool(min(cfg["images"], 2 * cfg["batch"]), cfg["image_size"])
    score(warm)
    sync()
    times = []
    for _ in range(cfg["repeats"]):
        start = time.perf_counter()
        scores = score(ds)
        sync()
        times.append(time.perf_counter() - start)
    assert scores.shape == (cfg["images"],) and bool(torch.isfinite(scores).all())

    x = ds.images[:1].expand(cfg["batch"], -1, -1, -1).contiguous().to(device)  # (B, C, H, W)
    forward_times = []
    with torch.inference_mode(), amp():
        model(x)
        sync()
        for _ in range(cfg["repeats"] * 3):
            start = time.perf_counter()
            model(x)
            sync()
            forward_times.append(time.perf_counter() - start)
    keys = ("model", "device", "image_size", "batch", "images", "amp", "channels_last",
            "workers", "pin_memory", "threads", "target_classes", "source_classes")
    seconds = statistics.median(times)
    return {**{k: cfg[k] for k in keys}, "seconds_per_pass": seconds, "seconds_all": times,
            "images_per_s": cfg["images"] / seconds,
            "model_only_images_per_s": cfg["batch"] / statistics.median(forward_times)}


def print_table(records: list[dict]) -> None:
    print(f"\n{'model':13} {'dev':4} {'px':>4} {'batch':>5} {'amp':5} {'c-last':6} {'wrk':>3} "
          f"{'img/s':>10} {'model-only img/s':>17}")
    for r in records:
        ips = "OOM" if r.get("images_per_s") is None else f"{r['images_per_s']:10.1f}"
        fwd = r.get("model_only_images_per_s")
        print(f"{r['model']:13} {r['device'][:4]:4} {r['image_size']:4d} {r['batch']:5d} "
              f"{r['amp']!s:5} {r['channels_last']!s:6} {r['workers']:3d} {ips:>10} "
              f"{'' if fwd is None else f'{fwd:17.1f}'}")


def configs(args) -> list[dict]:
    small = {"model": "small_resnet", "width": 32, "device": "cpu", "image_size": 32,
             "batch": args.cpu_batch, "images": args.cpu_images, "amp": False,
             "channels_last": False, "workers": 0, "pin_memory": False, "threads": args.threads,
             "target_classes": 16, "source_classes": 48, "repeats": args.repeats,
             "cudnn_benchmark": False}
    out = [small]
    if torch.cuda.is_available() and not args.no_cuda:
        r34 = {**small, "model": "resnet34", "device": "cuda", "image_size": 224,
               "batch": args.cuda_batch, "images": args.cuda_images, "workers": args.workers,
               "pin_memory": True, "target_classes": 200, "source_classes": 10320,
               "cudnn_benchmark": True}
        out += [{**r34, "amp": amp, "channels_last": cl}
                for amp in (False, True) for cl in (False, True)]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="write the records (a JSON list) here")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads per worker")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes (median reported)")
    ap.add_argument("--cpu-images", type=int, default=2048)
    ap.add_argument("--cpu-batch", type=int, default=256)
    ap.add_argument("--cuda-images", type=int, default=8192)
    ap.add_argument("--cuda-batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=4, help="CUDA: DataLoader workers")
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA configurations")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RECORD " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return
    facts = machine_facts(args.threads)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    records = []
    for cfg in configs(args):
        rec = spawn(__file__, cfg, cfg["threads"]) or {**cfg, "images_per_s": None,
                                                        "error": "OOM"}
        records.append(rec)
        ips = rec.get("images_per_s")
        print(f"  {cfg['model']} {cfg['device']} amp={cfg['amp']} channels_last="
              f"{cfg['channels_last']}: {'OOM' if ips is None else f'{ips:.1f} images/s'}",
              flush=True)
    print_table(records)
    if args.json:
        from metafgnet.io import write_json

        write_json(args.json, {"machine": facts, "records": records})
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
