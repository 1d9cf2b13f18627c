"""Benchmark one whole MetaFGNet meta-iteration: ours against the authors' way, first vs second order.

One meta-iteration (SPEC.md, 'The objective'): inner SGD step on T_i, meta-gradient of
L(T_j; θ'), auxiliary gradient of L(S; θ) through the source head at the pre-update parameters,
the running-statistics forward of T_j at θ, and the sequential two-step outer update (SGD,
momentum 0.9, weight decay 1e-4; backbone and source head lr 1e-3, target head lr 0.1).

- ``impl="metafgnet"``: :func:`metafgnet.meta.meta_gradients` (one inner pass with its graph
  kept, G at θ' with the outer graph freed at once, Eq. 5 Hessian-vector product), then the
  auxiliary gradient and a no-grad train-mode forward of T_j (the ``extra_forward`` policy).
- ``impl="authors"``: written like the authors' PyTorch 0.3 ``trainer.py``: deep copy of the
  target model, inner step on the copy with its own SGD optimizer, G on the copy, a second deep
  copy on which the inner loss is recomputed with ``create_graph`` for the Eq. 5 product, the
  auxiliary backward, and a full forward + backward of T_j at θ whose only use is to move the
  BatchNorm running statistics; gradients copied into ``.grad`` by hand, ``zero_grad`` keeping
  zero tensors (0.3 semantics).

Timing: one fresh subprocess (``--worker``) per configuration holds the four variants (impl x
order, each with its own model and optimizer) and runs them round-robin: a warm-up round, then
``--iters`` timed rounds; ``seconds_per_iter`` is the median, ``seconds_min`` the minimum
(on a machine shared with other jobs the minimum is the steadier estimate: interference only
adds time). ``gflops_per_iter`` (``torch.utils.flop_counter``: convolutions and matmuls,
backward and double backward included) is a load-independent cost. Peak memory: a fresh
subprocess per variant, one warm-up iteration, one measured iteration. On CUDA it is
``torch.cuda.max_memory_allocated`` (absolute, bytes). On CPU it is the growth of the resident
set over its steady state: after warm-up the peak-RSS mark is reset (``/proc/self/clear_refs``)
and ``peak_mem_bytes`` is VmHWM after the measured iteration minus VmRSS before it; glibc's mmap
threshold is pinned at 64 KiB (``MALLOC_MMAP_THRESHOLD_``) so freed tensors go back to the OS
and the resident set follows live tensor memory rather than allocator caching.

    .venv/bin/python bench/meta_step.py --json /tmp/meta_step.json
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from metafgnet.meta import meta_gradients
from metafgnet.models import build_model
from metafgnet.params import ModelParams

INNER_LR = 0.01
ORDERS = ("first", "second")
IMPLS = ("metafgnet", "authors")


# --------------------------------------------------------------------------- the two impls
def make_optimizer(model) -> torch.optim.SGD:
    groups = [
        {"params": model.backbone.parameters(), "lr": 1e-3},
        {"params": model.target_head.parameters(), "lr": 0.1},
        {"params": model.source_head.parameters(), "lr": 1e-3},
    ]
    return torch.optim.SGD(groups, lr=1e-3, momentum=0.9, weight_decay=1e-4)


def ours_step(model, opt, batches, order, amp, running_stats="extra_forward"):
    """One meta-iteration with ``metafgnet.meta``; returns (meta_grads, aux_grads).

    ``running_stats``: ``extra_forward`` (the authors' policy: a train-mode forward of T_j at
    θ, here without a graph) or ``inner_pass`` (the inner pass on T_i at θ moves them; no
    extra forward).
    """
    (x_i, y_i), (x_j, y_j), (x_s, y_s) = batches
    target, source = model.target_net(), model.source_net()
    inner_pass = running_stats == "inner_pass"
    with amp():
        meta = meta_gradients(
            target, (x_i, y_i), (x_j, y_j), INNER_LR, order, update_running_stats=inner_pass
        )
        aux_loss = F.cross_entropy(source(x_s), y_s)  # at θ, before any update
    src_params = dict(source.named_parameters())
    aux_grads = torch.autograd.grad(aux_loss, list(src_params.values()))
    aux = dict(zip(src_params, aux_grads, strict=True))
    if not inner_pass:
        with torch.no_grad(), amp():
            target(x_j)  # running statistics: one train-mode forward of T_j at θ, no graph
    named = dict(model.named_parameters())
    for grads in (meta, aux):  # sequential: meta step, then auxiliary step
        for name, g in grads.items():
            named[name].grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
    return meta, aux


def authors_step(model, opt, batches, order, amp):
    """One meta-iteration the way the authors' trainer.py does it; returns (meta, aux)."""
    (x_i, y_i), (x_j, y_j), (x_s, y_s) = batches
    model_target, model_source = model.target_net(), model.source_net()

    temp = copy.deepcopy(model_target)
    temp.train()
    temp_opt = torch.optim.SGD(temp.parameters(), lr=INNER_LR, momentum=0.0, weight_decay=0.0)
    with amp():
        loss_train = F.cross_entropy(temp(x_i), y_i)
    temp.zero_grad(set_to_none=False)
    loss_train.backward()
    _grad_for_task_train = [p.grad.clone() for p in temp.parameters()]  # kept by their code
    temp_opt.step()
    with amp():
        loss_target = F.cross_entropy(temp(x_j), y_j)
    temp.zero_grad(set_to_none=False)
    loss_target.backward()
    grad_mtrain = [p.grad.clone() for p in temp.parameters()]  # G = dL(T_j; θ')/dθ'
    _grad_of_meta_test = copy.deepcopy(grad_mtrain)
    if order == "second":
        temp = copy.deepcopy(model_target)
        temp.train()
        torch.optim.SGD(temp.parameters(), lr=INNER_LR, momentum=0.0, weight_decay=0.0)
        with amp():
            loss_train = F.cross_entropy(temp(x_i), y_i)
        temp.zero_grad(set_to_none=False)
        grad_params = torch.autograd.grad(loss_train, list(temp.parameters()), create_graph=True)
        weighted = 0
        for G, g in zip(grad_mtrain, grad_params, strict=True):
            weighted = weighted + (G.clone() * g).sum()  # Σ G·g, G constant (Eq. 5)
        grad2 = torch.autograd.grad(weighted, list(temp.parameters()), create_graph=False)
        grad_mtrain = [G - INNER_LR * h for G, h in zip(grad_mtrain, grad2, strict=True)]
    del temp

    with amp():
        loss_source = F.cross_entropy(model_source(x_s), y_s)
    model_source.zero_grad(set_to_none=False)
    loss_source.backward()
    grad_source = [p.grad.clone() for p in model_source.parameters()]

    with amp():  # forward + backward of T_j at θ: only its BatchNorm side effect is used
        loss_temp = F.cross_entropy(model_target(x_j), y_j)
    model_target.zero_grad(set_to_none=False)
    loss_temp.backward()
    opt.zero_grad(set_to_none=False)

    for p, g in zip(model_target.parameters(), grad_mtrain, strict=True):
        p.grad.data = p.grad.data.clone().zero_() + g
    opt.step()
    opt.zero_grad(set_to_none=False)
    for p, g in zip(model_source.parameters(), grad_source, strict=True):
        p.grad.data = p.grad.data.clone().zero_() + g
    opt.step()
    names_t = [n for n, _ in model_target.named_parameters()]
    names_s = [n for n, _ in model_source.named_parameters()]
    return dict(zip(names_t, grad_mtrain, strict=True)), dict(
        zip(names_s, grad_source, strict=True)
    )


STEPS = {"metafgnet": ours_step, "authors": authors_step}


def step_fn(cfg: dict):
    """The step function of ``cfg["impl"]`` with ``cfg``'s running-statistics policy."""
    if cfg["impl"] == "metafgnet":
        return functools.partial(ours_step, running_stats=cfg.get("running_stats", "extra_forward"))
    return authors_step


# --------------------------------------------------------------------------- setup
def make_setup(cfg, device, dtype, seed=0):
    torch.manual_seed(seed)
    params = ModelParams(backbone=cfg["model"], width=cfg.get("width", 32))
    model = build_model(params, cfg["target_classes"], cfg["source_classes"])
    model = model.to(device=device, dtype=dtype).train()
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(seed + 1)
    b, s = cfg["batch"], cfg["image_size"]

    def batch(k):
        x = torch.randn(b, 3, s, s, generator=g, dtype=dtype)  # (B, C, H, W)
        y = torch.randint(0, k, (b,), generator=g)  # (B,)
        return x.to(device), y.to(device)

    batches = (
        batch(cfg["target_classes"]),
        batch(cfg["target_classes"]),
        batch(cfg["source_classes"]),
    )
    return model, make_optimizer(model), batches


def amp_factory(cfg, device):
    if not cfg.get("amp"):
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# --------------------------------------------------------------------------- measurement
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _variants(cfg: dict) -> list[tuple[str, str]]:
    return [(impl, order) for order in ORDERS for impl in IMPLS]


def time_group(cfg: dict) -> list[dict]:
    """Seconds per iteration of every (impl, order) of one configuration, interleaved.

    Each variant has its own model and optimizer; rounds run one iteration of each variant in
    turn, so load from other processes on a shared machine hits all variants alike.
    """
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    amp = amp_factory(cfg, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    setups = {v: make_setup(cfg, device, torch.float32) for v in _variants(cfg)}
    steps = {v: step_fn({**cfg, "impl": v[0]}) for v in setups}
    times: dict[tuple[str, str], list[float]] = {v: [] for v in setups}
    out_of_memory: set[tuple[str, str]] = set()
    for round_ in range(cfg["warmup"] + cfg["iters"]):
        for (impl, order), (model, opt, batches) in setups.items():
            if (impl, order) in out_of_memory:
                continue
            sync()
            start = time.perf_counter()
            try:
                steps[(impl, order)](model, opt, batches, order, amp)
                sync()
            except torch.OutOfMemoryError:
                out_of_memory.add((impl, order))
                torch.cuda.empty_cache()
                continue
            if round_ >= cfg["warmup"]:
                times[(impl, order)].append(time.perf_counter() - start)
    keys = ("model", "batch", "image_size", "amp", "device", "threads")
    return [
        {
            **{k: cfg[k] for k in keys},
            "impl": impl,
            "order": order,
            "running_stats": cfg.get("running_stats", "extra_forward")
            if impl == "metafgnet"
            else "extra_forward_with_backward",
            "seconds_per_iter": None if v in out_of_memory else statistics.median(ts),
            "seconds_min": None if v in out_of_memory else min(ts),
            "seconds_all": ts,
            **({"error": "OOM"} if v in out_of_memory else {}),
        }
        for v, ts in times.items()
        for impl, order in [v]
    ]


def peak_memory(cfg: dict) -> dict:
    """Peak memory of one meta-iteration of one (impl, order), in this fresh process."""
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    model, opt, batches = make_setup(cfg, device, torch.float32)
    step, amp = step_fn(cfg), amp_factory(cfg, device)
    with FlopCounterMode(display=False) as counter:  # load-independent cost: conv/matmul FLOPs
        step(model, opt, batches, cfg["order"], amp)  # also the warm-up: optimizer state
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _status_kib("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")  # reset the VmHWM peak mark
    step(model, opt, batches, cfg["order"], amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak, method = torch.cuda.max_memory_allocated(), "cuda.max_memory_allocated"
    else:
        peak, method = _status_kib("VmHWM") * 1024 - baseline, "rss_peak_minus_steady"
    return {
        "peak_mem_bytes": int(peak),
        "baseline_mem_bytes": int(baseline),
        "mem_method": method,
        "gflops_per_iter": counter.get_total_flops() / 1e9,
    }


def run_worker(job: dict):
    return time_group(job["cfg"]) if job["kind"] == "time" else peak_memory(job["cfg"])


def spawn(job: dict):
    """Run one job in a fresh interpreter; memory jobs with glibc's mmap threshold pinned."""
    env = dict(os.environ, OMP_NUM_THREADS=str(job["cfg"]["threads"]))
    if job["kind"] == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RECORD "):
            return json.loads(line[len("RECORD ") :])
    tail = (proc.stderr or proc.stdout)[-1500:]
    if "out of memory" in tail.lower():
        return None
    raise RuntimeError(f"worker failed for {job}:\n{tail}")


# --------------------------------------------------------------------------- verification
def verify_same_meta_gradient(threads: int) -> float:
    """float64, small net: ours and the authors' way give the same meta- and aux-gradients."""
    torch.set_num_threads(threads)
    cfg = {
        "model": "small_resnet",
        "width": 16,
        "target_classes": 16,
        "source_classes": 48,
        "batch": 8,
        "image_size": 32,
    }
    worst = 0.0
    for order in ORDERS:
        results, states = [], []
        for impl in IMPLS:
            model, opt, batches = make_setup(cfg, torch.device("cpu"), torch.float64)
            results.append(STEPS[impl](model, opt, batches, order, nullcontext))
            states.append({k: v for k, v in model.state_dict().items() if "running" in k})
        for ours, theirs in zip(*results, strict=True):
            a = torch.cat([t.reshape(-1) for t in ours.values()])
            b = torch.cat([t.reshape(-1) for t in theirs.values()])
            worst = max(worst, ((a - b).norm() / b.norm()).item())
        for k in states[0]:  # same running statistics after the iteration
            torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-12, atol=1e-12)
    if worst > 1e-10:
        raise AssertionError(f"ours and the authors' meta-gradients differ: rel. err {worst:.2e}")
    return worst


# --------------------------------------------------------------------------- report
def machine_facts(threads: int) -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def fmt_mem(b):
    return "OOM" if b is None else f"{b / 2**20:9.1f} MiB"


def _f(v, spec):
    return "n/a" if v is None else format(v, spec)


def print_table(records):
    print(
        f"\n{'model':13} {'dev':4} {'amp':5} {'batch':>5} {'px':>4} {'impl':10} {'order':6} "
        f"{'s/iter med':>10} {'s/iter min':>10} {'GFLOP':>8} {'peak mem':>14}"
    )
    for r in records:
        print(
            f"{r['model']:13} {r['device'][:4]:4} {r['amp']!s:5} {r['batch']:5d} "
            f"{r['image_size']:4d} {r['impl']:10} {r['order']:6} "
            f"{_f(r['seconds_per_iter'], '10.3f'):>10} {_f(r.get('seconds_min'), '10.3f'):>10} "
            f"{_f(r.get('gflops_per_iter'), '8.1f'):>8} {fmt_mem(r.get('peak_mem_bytes')):>14}"
        )


RATIO_FIELDS = (
    ("seconds_per_iter", "time (median)"),
    ("seconds_min", "time (min)"),
    ("gflops_per_iter", "GFLOP"),
    ("peak_mem_bytes", "peak memory"),
)


def ratios(records):
    """Per configuration: ours second/first (target <= 2.0) and authors/ours (target >= 1.5)."""
    groups: dict[tuple, dict] = {}
    for r in records:
        key = (r["model"], r["device"], r["amp"], r["batch"], r["image_size"])
        groups.setdefault(key, {})[(r["impl"], r["order"])] = r
    out = []
    for key, g in groups.items():
        row = {"config": key}
        for field, label in RATIO_FIELDS:

            def val(impl, order, field=field, g=g):
                return (g.get((impl, order)) or {}).get(field)

            for name, (num, den) in {
                "ours second/first": (("metafgnet", "second"), ("metafgnet", "first")),
                "authors/ours second": (("authors", "second"), ("metafgnet", "second")),
                "authors/ours first": (("authors", "first"), ("metafgnet", "first")),
            }.items():
                a, b = val(*num), val(*den)
                row[f"{name} {label}"] = a / b if a and b else None
        out.append(row)
    print(
        "\nratios, measured side by side (targets: ours second/first time and memory <= 2.0x; "
        "authors/ours second-order time >= 1.5x)"
    )
    for row in out:
        print("  " + " ".join(str(x) for x in row["config"]))
        for name, v in row.items():
            if name != "config":
                print(f"    {name:42} {_f(v, '.2f')}{'' if v is None else 'x'}")
    return out


def configs(args) -> list[dict]:
    """One configuration per (model, device, AMP); each is timed for every (impl, order)."""
    base = {
        "threads": args.threads,
        "amp": False,
        "device": "cpu",
        "running_stats": args.ours_running_stats,
    }
    small = {
        "model": "small_resnet",
        "width": 32,
        "target_classes": 16,
        "source_classes": 48,
        "batch": 32,
        "image_size": 32,
        "warmup": 1,
        "iters": args.iters * 2,
    }
    r34 = {
        "model": "resnet34",
        "target_classes": 200,
        "source_classes": 1000,
        "batch": args.resnet_batch,
        "image_size": args.resnet_size,
        "warmup": 1,
        "iters": args.iters,
    }
    out = [{**base, **small}] + ([] if args.skip_resnet else [{**base, **r34}])
    if torch.cuda.is_available() and not args.no_cuda:
        gpu = {
            **base,
            **r34,
            "batch": 256,
            "image_size": 224,
            "warmup": 2,
            "iters": args.iters,
            "device": "cuda",
            "threads": args.threads,
        }
        out += [{**gpu, "amp": amp} for amp in (False, True)]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="write the records (a JSON list) here")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads per worker")
    ap.add_argument("--iters", type=int, default=4, help="timed iterations (small net: 2x)")
    ap.add_argument("--resnet-batch", type=int, default=8, help="CPU ResNet-34: images per batch")
    ap.add_argument("--resnet-size", type=int, default=112, help="CPU ResNet-34: image size")
    ap.add_argument("--skip-resnet", action="store_true", help="CPU: small net only")
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA configurations")
    ap.add_argument(
        "--ours-running-stats",
        choices=("extra_forward", "inner_pass"),
        default="extra_forward",
        help="running-statistics policy of impl=metafgnet (authors: extra_forward)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    if args.worker:
        print("RECORD " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return
    facts = machine_facts(args.threads)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    err = verify_same_meta_gradient(args.threads)
    print(
        f"check: ours == authors' meta-gradient (float64, small net, both orders): "
        f"max rel. err {err:.1e}; same running statistics"
    )
    records = []
    for cfg in configs(args):
        timed = spawn({"kind": "time", "cfg": cfg})
        for rec in timed:
            mem = spawn(
                {"kind": "memory", "cfg": {**cfg, "impl": rec["impl"], "order": rec["order"]}}
            )
            rec.update(mem or {"peak_mem_bytes": None, "error": "OOM"})
            records.append(rec)
            t = rec["seconds_per_iter"]
            print(
                f"  {rec['model']} {rec['device']} amp={rec['amp']} {rec['impl']:9} "
                f"{rec['order']:6}: {'OOM' if t is None else f'{t:.3f} s/iter'}, "
                f"{fmt_mem(rec['peak_mem_bytes'])}",
                flush=True,
            )
    print_table(records)
    summary = ratios(records)
    if args.json:
        from metafgnet.io import write_json

        write_json(args.json, records)
        write_json(
            args.json.with_suffix(".summary.json"),
            {
                "machine": facts,
                "check_rel_err": err,
                "ratios": [{**r, "config": list(r["config"])} for r in summary],
            },
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
