"""GPU figures of the meta-iteration at the paper's setting, as JSON (run by ``gpu_check.sh``).

ResNet-34 at 224 px with ``T_i``, ``T_j`` and ``S`` of 256 images each (the paper's setting),
through the library's :func:`metafgnet.training.meta_step` (variants of ``bench/peers.py``):

- ``timing``: exact (``ours``), first order (``ours-first``) and the bounded mode
  (``ours-mbN``), float32 and bf16 autocast, round-robin in one process: s/iter (median and
  min), images/s (``2·B + A`` images per iteration), exact/first and bounded/first ratios;
- ``memory``: peak ``cuda.max_memory_allocated`` of each variant in a fresh process;
- ``agreement``: rel. error of the exact meta-gradient under bf16 autocast against float32 (and
  float32 with TF32 off against float64 on a smaller batch), same weights and batches.

``--dry-run`` runs the same code on the CPU at tiny sizes (small net, 16 px, 8 images).

    python bench/gpu_check.py --out /tmp/gpu_check [--dry-run]
"""

from __future__ import annotations

from pathlib import Path

import torch

import peers
from harness import (
    SIZES,
    machine_facts,
    make_batches,
    make_model,
    parser_or_worker,
    spawn,
    time_fields,
    time_round_robin,
)
from metafgnet.meta import meta_gradients
from peers import make_variant

PAPER = {**SIZES["resnet34_224"], "batch": 256, "device": "cuda", "micro_batches": [64, 32],
         "warmup": 1, "iters": 3, "threads": 4}
DRY = {**SIZES["small_resnet"], "width": 8, "image_size": 16, "batch": 8, "device": "cpu",
       "micro_batches": [4, 2], "warmup": 1, "iters": 1, "threads": 2}


def variants(cfg: dict) -> list[tuple[str, bool]]:
    """``(variant, amp)`` pairs: exact and first order in float32 and bf16, bounded in float32."""
    return ([(v, amp) for amp in (False, True) for v in ("ours", "ours-first")]
            + [(f"ours-mb{m}", False) for m in cfg["micro_batches"]])


def label(variant: str, amp: bool) -> str:
    return f"{variant}{'+bf16' if amp else ''}"


def agreement(cfg: dict) -> dict:
    """Rel. errors of the exact meta-gradient: bf16 autocast vs float32, float32 vs float64."""
    device = torch.device(cfg["device"])
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def grads(dtype, amp=False, batch=None):
        c = {**cfg, "batch": batch or cfg["batch"]}
        net = make_model(c, device, dtype).target_net()  # initialised in float32, then cast
        t_i, t_j, _ = ((x.to(dtype), y) for x, y in make_batches(c, device, torch.float64))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return meta_gradients(net, t_i, t_j, 0.01)

    def err(a, b):
        fa = torch.cat([a[k].double().reshape(-1) for k in b])
        fb = torch.cat([b[k].double().reshape(-1) for k in b])
        return ((fa - fb).norm() / fb.norm()).item()

    fp32 = grads(torch.float32)
    out = {"bf16_vs_fp32_rel_err": err(grads(torch.float32, amp=True), fp32)}
    small = max(2, cfg["batch"] // 16)
    out["fp32_vs_fp64_rel_err"] = err(grads(torch.float32, batch=small),
                                      grads(torch.float64, batch=small))
    out["fp32_vs_fp64_batch"] = small
    return out


def timing(cfg: dict) -> dict:
    """Every variant of :func:`variants` round-robin in this process."""
    device = torch.device(cfg["device"])
    steps = {label(v, amp): make_variant({**cfg, "amp": amp}, v, device)
             for v, amp in variants(cfg)}
    times = time_round_robin(steps, cfg["warmup"], cfg["iters"], device)
    return {name: time_fields(ts) for name, ts in times.items()}


def run_worker(job: dict):
    torch.set_num_threads(job["cfg"]["threads"])
    return (agreement if job["kind"] == "agreement" else timing)(job["cfg"])


def ratio(a, b):
    return a / b if a and b else None


def run(cfg: dict, out: Path) -> dict:
    """All figures of ``cfg``, written to ``out/gpu_check.json``; returns them."""
    script, threads = __file__, cfg["threads"]
    result = {"machine": machine_facts(threads), "config": cfg,
              "agreement": spawn(script, {"kind": "agreement", "cfg": cfg}, threads),
              "timing": spawn(script, {"kind": "time", "cfg": cfg}, threads) or {}}
    images = 3 * cfg["batch"]
    for v, amp in variants(cfg):
        name = label(v, amp)
        rec = result["timing"].setdefault(name, {"seconds_per_iter": None, "error": "OOM"})
        job = {"kind": "memory", "cfg": {**cfg, "variant": v, "amp": amp}}  # peers' worker
        rec.update(spawn(peers.__file__, job, threads) or {"peak_mem_bytes": None})
        rec["images_per_s"] = ratio(images, rec.get("seconds_per_iter"))
    t = result["timing"]
    result["ratios"] = {}
    for name in t:  # every variant over first order at the same precision
        base = "ours-first+bf16" if name.endswith("+bf16") else "ours-first"
        for field in ("seconds_per_iter", "seconds_min", "peak_mem_bytes"):
            result["ratios"][f"{name}/{base} {field}"] = ratio(t[name].get(field),
                                                                t[base].get(field))
    from metafgnet.io import write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gpu_check.json", result)
    return result


def main(argv=None):
    ap = parser_or_worker(argv, run_worker, __doc__)
    if ap is None:
        return
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    ap.add_argument("--dry-run", action="store_true", help="the same code on CPU, tiny sizes")
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to check the script on the CPU")
    result = run(DRY if args.dry_run else PAPER, args.out)
    for name, rec in result["timing"].items():
        print(f"{name:16} s/iter {rec.get('seconds_per_iter')}  images/s "
              f"{rec.get('images_per_s')}  peak {rec.get('peak_mem_bytes')}")
    for name, v in result["ratios"].items():
        print(f"{name:50} {v}")
    print(result["agreement"])


if __name__ == "__main__":
    main()
