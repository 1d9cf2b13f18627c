"""What every benchmark here shares: the machine, fresh worker processes, round-robin timing,
peak memory, and the models and batches of a meta-iteration.

Timing: variants of one configuration live in ONE process and run round-robin (one warm-up
round, then timed rounds); ``seconds_per_iter`` is the median, ``seconds_min`` the minimum (on
a machine shared with other jobs the minimum is the steadier estimate: interference only adds
time). Ratios between variants of one run are the figures to compare.

Peak memory: a fresh process per variant, one warm-up iteration, one measured iteration. On
CUDA it is ``torch.cuda.max_memory_allocated`` (absolute, bytes). On CPU it is the growth of
the resident set over its steady state: after warm-up the peak-RSS mark is reset
(``/proc/self/clear_refs``) and the peak is VmHWM after the measured iteration minus VmRSS
before it; glibc's mmap threshold is pinned at 64 KiB (``MALLOC_MMAP_THRESHOLD_``) so freed
tensors go back to the OS and the resident set follows live tensor memory, not allocator
caching. ``gflops_per_iter`` (``torch.utils.flop_counter``: convolutions and matmuls, backward
and double backward included) is a load-independent cost of the warm-up iteration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from metafgnet.models import build_model
from metafgnet.params import MetaParams, ModelParams

# the meta-iteration every benchmark times: SGD momentum 0.9, weight decay 1e-4, backbone and
# source head lr 1e-3, target head lr 0.1, η 0.01, sequential update, extra_forward statistics
META = MetaParams(inner_lr=0.01, backbone_lr=1e-3, source_head_lr=1e-3, target_head_lr=0.1)

# model sizes: (backbone, image px, images per batch, target classes, source classes)
SIZES = {
    "small_resnet": {"model": "small_resnet", "width": 32, "image_size": 32, "batch": 32,
                     "target_classes": 16, "source_classes": 48},
    "resnet18": {"model": "resnet18", "image_size": 64, "batch": 16,
                 "target_classes": 200, "source_classes": 1000},
    "resnet34": {"model": "resnet34", "image_size": 112, "batch": 8,
                 "target_classes": 200, "source_classes": 1000},
    "resnet34_224": {"model": "resnet34", "image_size": 224, "batch": 8,
                     "target_classes": 200, "source_classes": 1000},
}


# --------------------------------------------------------------------------- set-up
def make_model(cfg: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A ``MetaFGNet`` of ``cfg``'s backbone and head sizes, in train mode."""
    torch.manual_seed(seed)
    params = ModelParams(backbone=cfg["model"], width=cfg.get("width", 32))
    model = build_model(params, cfg["target_classes"], cfg["source_classes"])
    model = model.to(device=device, dtype=dtype).train()
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model


def make_batches(cfg: dict, device: torch.device, dtype: torch.dtype, seed: int = 1):
    """``(T_i, T_j, S)`` of random images, each ``(x: (B, 3, s, s), y: (B,))``."""
    g = torch.Generator().manual_seed(seed)
    b, s = cfg["batch"], cfg["image_size"]

    def batch(k):
        x = torch.randn(b, 3, s, s, generator=g, dtype=dtype)  # (B, C, H, W)
        y = torch.randint(0, k, (b,), generator=g)  # (B,)
        if cfg.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(device), y.to(device)

    return batch(cfg["target_classes"]), batch(cfg["target_classes"]), batch(cfg["source_classes"])


def amp_factory(cfg: dict, device: torch.device):
    """The autocast context factory of ``cfg`` (bf16 when ``cfg["amp"]``)."""
    if not cfg.get("amp"):
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def rel_err(a: dict, b: dict) -> float:
    """``‖a − b‖ / ‖b‖`` over all tensors of two ``{name: tensor}`` dicts (same keys)."""
    fa = torch.cat([a[k].reshape(-1).double().cpu() for k in b])
    fb = torch.cat([b[k].reshape(-1).double().cpu() for k in b])
    return ((fa - fb).norm() / fb.norm()).item()


# --------------------------------------------------------------------------- measurement
def time_round_robin(steps: dict, warmup: int, iters: int, device: torch.device) -> dict:
    """``{name: [seconds, ...]}`` of ``iters`` timed rounds after ``warmup``; each round calls
    every ``steps[name]()`` once in turn. A variant that runs out of CUDA memory gets None."""
    sync = synchronizer(device)
    times: dict[str, list[float] | None] = {name: [] for name in steps}
    for round_ in range(warmup + iters):
        for name, step in steps.items():
            if times[name] is None:
                continue
            sync()
            start = time.perf_counter()
            try:
                step()
                sync()
            except torch.OutOfMemoryError:
                times[name] = None
                torch.cuda.empty_cache()
                continue
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def time_fields(ts: list[float] | None) -> dict:
    if ts is None:
        return {"seconds_per_iter": None, "seconds_min": None, "error": "OOM"}
    return {"seconds_per_iter": statistics.median(ts), "seconds_min": min(ts), "seconds_all": ts}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(step: Callable[[], object], device: torch.device) -> dict:
    """Peak memory of one call of ``step`` after one warm-up call (module docstring)."""
    with FlopCounterMode(display=False) as counter:  # also the warm-up: optimizer state
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _status_kib("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")  # reset the VmHWM peak mark
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak, method = torch.cuda.max_memory_allocated(), "cuda.max_memory_allocated"
    else:
        peak, method = _status_kib("VmHWM") * 1024 - baseline, "rss_peak_minus_steady"
    return {"peak_mem_bytes": int(peak), "baseline_mem_bytes": int(baseline),
            "mem_method": method, "gflops_per_iter": counter.get_total_flops() / 1e9}


# --------------------------------------------------------------------------- processes
def spawn(script: str, job: dict, threads: int) -> dict | list | None:
    """Run ``script --worker <job>`` in a fresh interpreter and return its ``RECORD`` line's
    JSON; None when it ran out of memory. Memory jobs (``job["kind"] == "memory"``) run with
    glibc's mmap threshold pinned (module docstring)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if job.get("kind") == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    proc = subprocess.run([sys.executable, script, "--worker", json.dumps(job)], env=env,
                          capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RECORD "):
            return json.loads(line[len("RECORD "):])
    tail = (proc.stderr or proc.stdout)[-1500:]
    if "out of memory" in tail.lower():
        return None
    raise RuntimeError(f"worker failed for {job}:\n{tail}")


def parser_or_worker(argv: list[str] | None, run: Callable[[dict], object], doc: str):
    """In a worker (``argv`` = ``--worker <json>``): print ``RECORD <run(job)>`` and return
    None. Otherwise the script's ``ArgumentParser`` (described by ``doc``'s first line)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--worker":
        print("RECORD " + json.dumps(run(json.loads(argv[1]))), flush=True)
        return None
    return argparse.ArgumentParser(description=doc.split("\n")[0])


def machine_facts(threads: int) -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts = {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
             "python": platform.python_version(),
             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def fmt_mem(b) -> str:
    return "OOM" if b is None else f"{b / 2**20:9.1f} MiB"


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)
