"""The exact meta-gradient side by side with the MAML tools researchers use, and the bounded mode.

Every variant runs the library's meta-iteration (:func:`metafgnet.training.meta_step`, what
``meta_train`` runs) with its own model and optimizer; only step 3, the meta-gradient, differs:

- ``ours``: :func:`metafgnet.meta.meta_gradients`, exact (Eq. 5 Hessian-vector product of the
  MetaFGNet supplementary); ``ours-first``: its first-order approximation;
- ``ours-mbN``: the same exact meta-gradient in micro-batches of N images (``meta.micro_batch``;
  ghost batches under BatchNorm, so it is checked by the test suite, not against the others);
- ``higher``: ``higher.innerloop_ctx`` with a differentiable SGD step
  (``copy_initial_weights=False``), then ``autograd.grad`` of the outer loss w.r.t. θ;
- ``torch.func``: ``grad`` of a function containing ``grad`` (the functorch MAML pattern), on a
  model whose BatchNorm layers went through ``replace_all_batch_norm_modules_`` (nested ``grad``
  cannot update running statistics);
- ``authors``: the authors' whole iteration (``bench/meta_step.py``'s ``authors_step``).

``higher`` and ``torch.func`` adapt every parameter of the target network, as ``ours`` does
here. ``higher``'s patched module moves the running statistics in both passes: the adapter puts
them back so every variant keeps the ``extra_forward`` policy's statistics.

Before timing, the meta-gradients of ``ours``, ``higher``, ``torch.func`` and ``authors`` are
checked against each other in float64 on the same model and image size (with at most
``--check-batch`` images, to keep float64 affordable). Timing round-robin in one process; peak
memory in a fresh process per variant (``bench/harness.py``).

    .venv/bin/python bench/peers.py --json /tmp/peers.json
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from harness import (
    META,
    SIZES,
    amp_factory,
    fmt,
    fmt_mem,
    machine_facts,
    make_batches,
    make_model,
    parser_or_worker,
    peak_memory,
    rel_err,
    spawn,
    time_fields,
    time_round_robin,
)
from meta_step import authors_step
from metafgnet.meta import MetaGradients, meta_gradients
from metafgnet.training import build_meta_optimizer, meta_step


# --------------------------------------------------------------------------- peer meta-gradients
def higher_meta_gradients(net, inner, outer, inner_lr, order="second", params=None, *,
                          return_losses=False, **_):
    """``∇_θ L(T_j; θ − η∇L(T_i; θ))`` with ``higher``; same contract as ``meta_gradients``."""
    import higher

    saved = {n: b.clone() for n, b in net.named_buffers()}
    inner_opt = torch.optim.SGD(net.parameters(), lr=inner_lr)
    with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=False,
                              track_higher_grads=order != "first") as (fnet, diffopt):
        inner_loss = F.cross_entropy(fnet(inner[0]), inner[1])
        diffopt.step(inner_loss)
        outer_loss = F.cross_entropy(fnet(outer[0]), outer[1])
        named = list(net.named_parameters())
        grads = torch.autograd.grad(outer_loss, [p for _, p in named])
    with torch.no_grad():
        for n, b in net.named_buffers():
            b.copy_(saved[n])
    out = {n: g for (n, _), g in zip(named, grads, strict=True)}
    return MetaGradients(out, inner_loss.detach(), outer_loss.detach()) if return_losses else out


def func_meta_gradients(net, inner, outer, inner_lr, order="second", params=None, *,
                        return_losses=False, **_):
    """The ``torch.func`` MAML pattern: ``grad`` of the meta loss, which itself calls ``grad``.
    ``net``'s BatchNorm layers must have gone through ``replace_all_batch_norm_modules_``."""
    theta = {n: p.detach() for n, p in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def loss(p, batch):
        return F.cross_entropy(functional_call(net, (p, buffers), (batch[0],)), batch[1])

    def meta_loss(p):
        g, inner_loss = torch.func.grad_and_value(loss)(p, inner)
        if order == "first":
            g = {n: t.detach() for n, t in g.items()}
        outer_loss = loss({n: p[n] - inner_lr * g[n] for n in p}, outer)
        return outer_loss, (inner_loss, outer_loss)

    grads, (inner_loss, outer_loss) = torch.func.grad(meta_loss, has_aux=True)(theta)
    return MetaGradients(grads, inner_loss, outer_loss) if return_losses else grads


def authors_meta_gradients(model, batches):
    """The authors' meta-gradient: ``authors_step``'s first result (it also updates ``model``)."""
    return authors_step(model, build_meta_optimizer(model, META), batches, "second",
                        amp_factory({}, torch.device("cpu")))[0]


# --------------------------------------------------------------------------- variants
def variant_names(cfg: dict) -> list[str]:
    return (["ours", "ours-first", "higher", "torch.func", "authors"]
            + [f"ours-mb{m}" for m in cfg["micro_batches"]])


def make_variant(cfg: dict, name: str, device, dtype=torch.float32):
    """A zero-argument callable running one iteration of variant ``name`` on its own model."""
    model = make_model(cfg, device, dtype)
    batches, amp = make_batches(cfg, device, dtype), amp_factory(cfg, device)
    opt = build_meta_optimizer(model, META)
    if name == "authors":
        return lambda: authors_step(model, opt, batches, "second", amp)
    meta, gradient_fn = dataclasses.replace(META, batch_size=cfg["batch"]), None
    if name == "ours-first":
        meta = dataclasses.replace(meta, order="first")
    elif name.startswith("ours-mb"):
        meta = dataclasses.replace(meta, micro_batch=int(name[len("ours-mb"):]))
    elif name == "higher":
        gradient_fn = higher_meta_gradients
    elif name == "torch.func":
        torch.func.replace_all_batch_norm_modules_(model)
        gradient_fn = func_meta_gradients
    return lambda: meta_step(model, opt, batches, meta.inner_lr, meta, autocast=amp,
                             gradient_fn=gradient_fn)


def check_agreement(cfg: dict) -> dict[str, float]:
    """float64: rel. error of each peer's meta-gradient against ours, same weights and batches."""
    cpu, dtype = torch.device("cpu"), torch.float64
    small = {**cfg, "batch": min(cfg["batch"], cfg["check_batch"])}
    batches = make_batches(small, cpu, dtype)
    ours = meta_gradients(make_model(small, cpu, dtype).target_net(), *batches[:2], META.inner_lr)
    first = meta_gradients(make_model(small, cpu, dtype).target_net(), *batches[:2],
                           META.inner_lr, "first")
    func_model = make_model(small, cpu, dtype)
    torch.func.replace_all_batch_norm_modules_(func_model)
    peers = {
        "higher": higher_meta_gradients(make_model(small, cpu, dtype).target_net(),
                                        *batches[:2], META.inner_lr),
        "torch.func": func_meta_gradients(func_model.target_net(), *batches[:2], META.inner_lr),
        "authors": authors_meta_gradients(make_model(small, cpu, dtype), batches),
    }
    errs = {name: rel_err(g, ours) for name, g in peers.items()}
    errs["first-order (for scale)"] = rel_err(first, ours)
    worst = max(v for k, v in errs.items() if not k.startswith("first"))
    if worst > 1e-10:
        raise AssertionError(f"meta-gradients disagree on {cfg['model']}: {errs}")
    return errs


# --------------------------------------------------------------------------- workers
KEYS = ("model", "batch", "image_size", "amp", "device", "threads")


def run_worker(job: dict):
    cfg = job["cfg"]
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    if job["kind"] == "check":
        return check_agreement(cfg)
    if job["kind"] == "memory":
        return peak_memory(make_variant(cfg, cfg["variant"], device), device)
    steps = {name: make_variant(cfg, name, device) for name in variant_names(cfg)}
    times = time_round_robin(steps, cfg["warmup"], cfg["iters"], device)
    return [{**{k: cfg[k] for k in KEYS}, "variant": n, **time_fields(times[n])} for n in steps]


def summarise(records: list[dict]) -> list[dict]:
    """Per configuration: every variant's time and memory over ``ours`` and ``ours-first``."""
    out = []
    by_cfg: dict[tuple, dict] = {}
    for r in records:
        by_cfg.setdefault(tuple(r[k] for k in KEYS[:5]), {})[r["variant"]] = r
    for key, g in by_cfg.items():
        row = {"config": list(key)}
        for name, r in g.items():
            for base in ("ours", "ours-first"):
                for field in ("seconds_min", "seconds_per_iter", "peak_mem_bytes"):
                    a, b = r.get(field), (g.get(base) or {}).get(field)
                    row[f"{name}/{base} {field}"] = a / b if a and b else None
        out.append(row)
    return out


def print_table(records: list[dict], summary: list[dict]) -> None:
    print(f"\n{'model':13} {'px':>4} {'batch':>5} {'variant':11} {'s/iter med':>10} "
          f"{'s/iter min':>10} {'peak mem':>14} {'time/ours':>9} {'mem/ours':>8} "
          f"{'time/first':>10} {'mem/first':>9}")
    rows = {tuple(s["config"]): s for s in summary}
    for r in records:
        s = rows[tuple(r[k] for k in KEYS[:5])]
        v = r["variant"]
        print(f"{r['model']:13} {r['image_size']:4d} {r['batch']:5d} {v:11} "
              f"{fmt(r['seconds_per_iter'], '10.3f'):>10} {fmt(r['seconds_min'], '10.3f'):>10} "
              f"{fmt_mem(r.get('peak_mem_bytes')):>14} "
              f"{fmt(s[f'{v}/ours seconds_min'], '9.2f'):>9} "
              f"{fmt(s[f'{v}/ours peak_mem_bytes'], '8.2f'):>8} "
              f"{fmt(s[f'{v}/ours-first seconds_min'], '10.2f'):>10} "
              f"{fmt(s[f'{v}/ours-first peak_mem_bytes'], '9.2f'):>9}")


def configs(args) -> list[dict]:
    sizes = list(args.sizes) + (["resnet34_224"] if args.with_224 else [])
    out = []
    for size in sizes:
        cfg = {**SIZES[size], "device": args.device, "amp": False, "threads": args.threads,
               "warmup": 1, "iters": args.iters, "check_batch": args.check_batch}
        if args.batch:
            cfg["batch"] = args.batch
        if args.image_size:
            cfg["image_size"] = args.image_size
        b = cfg["batch"]
        cfg["micro_batches"] = sorted({m for m in (b // 2, b // 4) if m >= 1}, reverse=True)
        out.append(cfg)
    return out


def main(argv=None):
    ap = parser_or_worker(argv, run_worker, __doc__)
    if ap is None:
        return
    ap.add_argument("--json", type=Path, help="write records and summary (JSON) here")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads per worker")
    ap.add_argument("--iters", type=int, default=3, help="timed rounds after one warm-up")
    ap.add_argument("--sizes", nargs="*", default=["small_resnet", "resnet18", "resnet34"],
                    choices=[s for s in SIZES if s != "resnet34_224"])
    ap.add_argument("--with-224", action="store_true", help="add ResNet-34 at 224 px")
    ap.add_argument("--batch", type=int, help="images per batch for every size")
    ap.add_argument("--image-size", type=int, help="image px for every size")
    ap.add_argument("--check-batch", type=int, default=4, help="float64 check: max images")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("higher") is None:
        raise SystemExit("bench/peers.py needs higher: pip install -e '.[bench]'")
    sys.stdout.reconfigure(line_buffering=True)
    facts = machine_facts(args.threads)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    records, checks = [], {}
    for cfg in configs(args):
        checks[cfg["model"]] = errs = spawn(__file__, {"kind": "check", "cfg": cfg}, args.threads)
        print(f"check {cfg['model']} (float64): rel. err vs ours "
              + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
        for rec in spawn(__file__, {"kind": "time", "cfg": cfg}, args.threads):
            mem = spawn(__file__, {"kind": "memory", "cfg": {**cfg, "variant": rec["variant"]}},
                        args.threads)
            rec.update(mem or {"peak_mem_bytes": None, "error": "OOM"})
            records.append(rec)
            print(f"  {rec['model']} {rec['image_size']} px x {rec['batch']} {rec['variant']:10}: "
                  f"{fmt(rec['seconds_min'], '.3f')} s/iter (min), "
                  f"{fmt_mem(rec['peak_mem_bytes'])}")
    summary = summarise(records)
    print_table(records, summary)
    if args.json:
        from metafgnet.io import write_json

        write_json(args.json, {"machine": facts, "checks": checks, "records": records,
                               "summary": summary})
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
