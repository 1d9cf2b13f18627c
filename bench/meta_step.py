"""Benchmark one whole MetaFGNet meta-iteration: the library's against the authors' way, first
vs second order.

One meta-iteration (the MetaFGNet objective): inner SGD step on T_i, meta-gradient of
L(T_j; θ'), auxiliary gradient of L(S; θ) through the source head at the pre-update parameters,
the running-statistics forward of T_j at θ, and the sequential two-step outer update (SGD,
momentum 0.9, weight decay 1e-4; backbone and source head lr 1e-3, target head lr 0.1).

- ``impl="metafgnet"``: :func:`metafgnet.training.meta_step`, the function ``meta_train`` runs
  (steps 3-8: :func:`metafgnet.meta.meta_gradients`, the no-grad ``T_j`` forward of the
  ``extra_forward`` policy, the auxiliary gradient, the non-finite check, the outer update),
  with the optimizer of :func:`metafgnet.training.build_meta_optimizer`.
- ``impl="authors"``: written like the authors' PyTorch 0.3 ``trainer.py``: deep copy of the
  target model, inner step on the copy with its own SGD optimizer, G on the copy, a second deep
  copy on which the inner loss is recomputed with ``create_graph`` for the Eq. 5 product, the
  auxiliary backward, and a full forward + backward of T_j at θ whose only use is to move the
  BatchNorm running statistics; gradients copied into ``.grad`` by hand, ``zero_grad`` keeping
  zero tensors (0.3 semantics).

Timing and memory as in ``bench/harness.py``: the four variants (impl x order) of one
configuration round-robin in one fresh process, peak memory in a fresh process per variant.

    .venv/bin/python bench/meta_step.py --json /tmp/meta_step.json
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from harness import (
    META,
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
from metafgnet.training import build_meta_optimizer, meta_step

ORDERS = ("first", "second")
IMPLS = ("metafgnet", "authors")


# --------------------------------------------------------------------------- the two impls
def library_step(model, opt, batches, order, amp, meta=META):
    """One meta-iteration exactly as ``meta_train`` runs it (steps 3-8)."""
    return meta_step(model, opt, batches, meta.inner_lr, dataclasses.replace(meta, order=order),
                     autocast=amp)


def authors_step(model, opt, batches, order, amp):
    """One meta-iteration the way the authors' trainer.py does it; returns (meta, aux)."""
    (x_i, y_i), (x_j, y_j), (x_s, y_s) = batches
    model_target, model_source = model.target_net(), model.source_net()

    temp = copy.deepcopy(model_target)
    temp.train()
    temp_opt = torch.optim.SGD(temp.parameters(), lr=META.inner_lr, momentum=0.0, weight_decay=0.0)
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
        torch.optim.SGD(temp.parameters(), lr=META.inner_lr, momentum=0.0, weight_decay=0.0)
        with amp():
            loss_train = F.cross_entropy(temp(x_i), y_i)
        temp.zero_grad(set_to_none=False)
        grad_params = torch.autograd.grad(loss_train, list(temp.parameters()), create_graph=True)
        weighted = 0
        for G, g in zip(grad_mtrain, grad_params, strict=True):
            weighted = weighted + (G.clone() * g).sum()  # Σ G·g, G constant (Eq. 5)
        grad2 = torch.autograd.grad(weighted, list(temp.parameters()), create_graph=False)
        grad_mtrain = [G - META.inner_lr * h for G, h in zip(grad_mtrain, grad2, strict=True)]
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


STEPS = {"metafgnet": library_step, "authors": authors_step}


def make_variant(cfg: dict, impl: str, order: str, device, dtype=torch.float32):
    """A zero-argument callable running one iteration of ``(impl, order)`` on its own model."""
    model = make_model(cfg, device, dtype)
    opt, batches = build_meta_optimizer(model, META), make_batches(cfg, device, dtype)
    amp, step = amp_factory(cfg, device), STEPS[impl]
    return lambda: step(model, opt, batches, order, amp)


# --------------------------------------------------------------------------- workers
KEYS = ("model", "batch", "image_size", "amp", "device", "threads")


def run_worker(job: dict):
    cfg = job["cfg"]
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    if job["kind"] == "memory":
        return peak_memory(make_variant(cfg, cfg["impl"], cfg["order"], device), device)
    variants = [(impl, order) for order in ORDERS for impl in IMPLS]
    steps = {f"{i}/{o}": make_variant(cfg, i, o, device) for i, o in variants}
    times = time_round_robin(steps, cfg["warmup"], cfg["iters"], device)
    return [{**{k: cfg[k] for k in KEYS}, "impl": i, "order": o,
             "running_stats": "extra_forward" if i == "metafgnet" else
             "extra_forward_with_backward", **time_fields(times[f"{i}/{o}"])}
            for i, o in variants]


# --------------------------------------------------------------------------- verification
def verify_same_update(threads: int) -> float:
    """float64, small net: one iteration of the library and of the authors' way leave the same
    weights (same meta- and auxiliary gradients, same optimizer); returns the worst rel. error.

    Running statistics take the same two updates in another order (library: ``T_j`` then
    ``S``; authors: ``S`` then ``T_j``), so they are not compared."""
    torch.set_num_threads(threads)
    cfg = {"model": "small_resnet", "width": 16, "target_classes": 16, "source_classes": 48,
           "batch": 8, "image_size": 32}
    cpu, worst = torch.device("cpu"), 0.0
    for order in ORDERS:
        weights = []
        for impl in IMPLS:
            model = make_model(cfg, cpu, torch.float64)
            STEPS[impl](model, build_meta_optimizer(model, META),
                        make_batches(cfg, cpu, torch.float64), order, amp_factory({}, cpu))
            weights.append(dict(model.named_parameters()))
        moved = rel_err(weights[0], dict(make_model(cfg, cpu, torch.float64).named_parameters()))
        assert moved > 1e-6, "the iteration did not change the weights"
        worst = max(worst, rel_err(*weights))
    if worst > 1e-10:
        raise AssertionError(f"library and authors' updates differ: rel. err {worst:.2e}")
    return worst


# --------------------------------------------------------------------------- report
def print_table(records):
    print(f"\n{'model':13} {'dev':4} {'amp':5} {'batch':>5} {'px':>4} {'impl':10} {'order':6} "
          f"{'s/iter med':>10} {'s/iter min':>10} {'GFLOP':>8} {'peak mem':>14}")
    for r in records:
        print(f"{r['model']:13} {r['device'][:4]:4} {r['amp']!s:5} {r['batch']:5d} "
              f"{r['image_size']:4d} {r['impl']:10} {r['order']:6} "
              f"{fmt(r['seconds_per_iter'], '10.3f'):>10} {fmt(r.get('seconds_min'), '10.3f'):>10} "
              f"{fmt(r.get('gflops_per_iter'), '8.1f'):>8} {fmt_mem(r.get('peak_mem_bytes')):>14}")


RATIO_FIELDS = (("seconds_per_iter", "time (median)"), ("seconds_min", "time (min)"),
                ("gflops_per_iter", "GFLOP"), ("peak_mem_bytes", "peak memory"))
PAIRS = {"ours second/first": (("metafgnet", "second"), ("metafgnet", "first")),
         "authors/ours second": (("authors", "second"), ("metafgnet", "second")),
         "authors/ours first": (("authors", "first"), ("metafgnet", "first"))}


def ratios(records):
    """Per configuration: ours second/first and authors/ours, for every field."""
    groups: dict[tuple, dict] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in KEYS[:5]), {})[(r["impl"], r["order"])] = r
    out = []
    for key, g in groups.items():
        row = {"config": list(key)}
        for field, label in RATIO_FIELDS:
            for name, (num, den) in PAIRS.items():
                a, b = (g.get(num) or {}).get(field), (g.get(den) or {}).get(field)
                row[f"{name} {label}"] = a / b if a and b else None
        out.append(row)
    print("\nratios, measured side by side")
    for row in out:
        print("  " + " ".join(str(x) for x in row["config"]))
        for name, v in row.items():
            if name != "config":
                print(f"    {name:42} {fmt(v, '.2f')}{'' if v is None else 'x'}")
    return out


def configs(args) -> list[dict]:
    """One configuration per (model, device, AMP); each is timed for every (impl, order)."""
    base = {"threads": args.threads, "amp": False, "device": "cpu"}
    small = {"model": "small_resnet", "width": 32, "target_classes": 16, "source_classes": 48,
             "batch": 32, "image_size": 32, "warmup": 1, "iters": args.iters * 2}
    r34 = {"model": "resnet34", "target_classes": 200, "source_classes": 1000,
           "batch": args.resnet_batch, "image_size": args.resnet_size, "warmup": 1,
           "iters": args.iters}
    out = [{**base, **small}] + ([] if args.skip_resnet else [{**base, **r34}])
    if torch.cuda.is_available() and not args.no_cuda:
        gpu = {**base, **r34, "batch": 256, "image_size": 224, "warmup": 2, "device": "cuda"}
        out += [{**gpu, "amp": amp} for amp in (False, True)]
    return out


def main(argv=None):
    ap = parser_or_worker(argv, run_worker, __doc__)
    if ap is None:
        return
    ap.add_argument("--json", type=Path, help="write the records (a JSON list) here")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads per worker")
    ap.add_argument("--iters", type=int, default=4, help="timed iterations (small net: 2x)")
    ap.add_argument("--resnet-batch", type=int, default=8, help="CPU ResNet-34: images per batch")
    ap.add_argument("--resnet-size", type=int, default=112, help="CPU ResNet-34: image size")
    ap.add_argument("--skip-resnet", action="store_true", help="CPU: small net only")
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA configurations")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    facts = machine_facts(args.threads)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    err = verify_same_update(args.threads)
    print(f"check: library == authors' update (float64, small net, both orders): "
          f"max rel. err {err:.1e}")
    records = []
    for cfg in configs(args):
        for rec in spawn(__file__, {"kind": "time", "cfg": cfg}, args.threads):
            mem = spawn(__file__, {"kind": "memory",
                                   "cfg": {**cfg, "impl": rec["impl"], "order": rec["order"]}},
                        args.threads)
            rec.update(mem or {"peak_mem_bytes": None, "error": "OOM"})
            records.append(rec)
            t = rec["seconds_per_iter"]
            print(f"  {rec['model']} {rec['device']} amp={rec['amp']} {rec['impl']:9} "
                  f"{rec['order']:6}: {'OOM' if t is None else f'{t:.3f} s/iter'}, "
                  f"{fmt_mem(rec['peak_mem_bytes'])}")
    print_table(records)
    summary = ratios(records)
    if args.json:
        from metafgnet.io import write_json

        write_json(args.json, records)
        write_json(args.json.with_suffix(".summary.json"),
                   {"machine": facts, "check_rel_err": err, "ratios": summary})
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
