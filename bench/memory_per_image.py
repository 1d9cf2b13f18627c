"""Per-image memory of the meta-gradient passes, and the micro-batch that fits the paper's setting.

Measures, in a fresh process each (``bench/harness.py``'s peak memory), on the target network
of ResNet-34 at ``--image-size`` px:

- ``exact``: :func:`metafgnet.meta.meta_gradients`, exact, full batch: the inner pass's
  double-backward graph lives through the Hessian-vector product;
- ``first``: a first-order forward + backward (the auxiliary pass, ``ours-first``'s largest).

at two batch sizes; the slope is the memory per image (the fixed part, weights and gradients,
cancels). From it: the largest ``meta.micro_batch`` that fits the paper's setting (``T_i``,
``T_j`` and ``S`` of 256 images at 224 px, 200 target and 10,320 source classes) into GPUs of
12, 16, 24 and 80 GB, with the fixed part counted from the parameter count (weights, SGD
momentum, ``.grad``, and the meta-gradient's ``g``, ``θ'``, ``G``, ``H·G``: 8 copies) plus the
three input batches. Per-image figures measured at another size are scaled by the pixel count.

    .venv/bin/python bench/memory_per_image.py --image-size 112 --batches 2 4
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness import machine_facts, make_batches, make_model, parser_or_worker, peak_memory, spawn
from metafgnet.meta import meta_gradients

PAPER = {"batch": 256, "image_size": 224, "target_classes": 200, "source_classes": 10320}
PARAM_COPIES = 8  # weights, momentum, .grad, g, θ', G, H·G, one temporary
GB = 1e9


def run_worker(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    cpu = torch.device("cpu")
    cfg = {"model": "resnet34", "target_classes": 200, "source_classes": 1000,
           "batch": job["batch"], "image_size": job["image_size"]}
    net = make_model(cfg, cpu, torch.float32).target_net()
    t_i, t_j, _ = make_batches(cfg, cpu, torch.float32)
    if job["pass"] == "exact":
        return peak_memory(lambda: meta_gradients(net, t_i, t_j, 0.01), cpu)
    params = [p for p in net.parameters()]
    return peak_memory(lambda: torch.autograd.grad(F.cross_entropy(net(t_i[0]), t_i[1]), params),
                       cpu)


def largest_micro_batch(budget: float, per_image_exact: float, per_image_first: float,
                        fixed: float) -> int | None:
    """Largest m with fixed + exact(m) and fixed + first(256) both within ``budget``."""
    if fixed + per_image_first * PAPER["batch"] > budget:
        return None  # the auxiliary pass alone does not fit
    m = int((budget - fixed) // per_image_exact)
    return min(m, PAPER["batch"]) if m >= 1 else None


def main(argv=None):
    ap = parser_or_worker(argv, run_worker, __doc__)
    if ap is None:
        return
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--batches", type=int, nargs=2, default=[2, 4])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine_facts(args.threads).items()))
    per_image = {}
    for kind in ("first", "exact"):
        peaks = [spawn(__file__, {"kind": "memory", "pass": kind, "batch": b,
                                  "image_size": args.image_size, "threads": args.threads},
                       args.threads)["peak_mem_bytes"] for b in args.batches]
        slope = (peaks[1] - peaks[0]) / (args.batches[1] - args.batches[0])
        per_image[kind] = slope * (PAPER["image_size"] / args.image_size) ** 2
        print(f"{kind}: peaks {[round(p / 2**20, 1) for p in peaks]} MiB at batches "
              f"{args.batches}, {args.image_size} px -> {per_image[kind] / 2**20:.1f} MiB/image "
              f"at 224 px")
    torch.manual_seed(0)
    from metafgnet.models import build_model
    from metafgnet.params import ModelParams

    model = build_model(ModelParams(backbone="resnet34"), PAPER["target_classes"],
                        PAPER["source_classes"])
    n_params = sum(p.numel() for p in model.parameters())
    inputs = 3 * PAPER["batch"] * 3 * PAPER["image_size"] ** 2 * 4
    fixed = PARAM_COPIES * n_params * 4 + inputs
    print(f"fixed: {n_params / 1e6:.1f} M parameters x {PARAM_COPIES} copies + inputs "
          f"= {fixed / GB:.2f} GB")
    print(f"paper setting, full batch: exact {(fixed + 256 * per_image['exact']) / GB:.1f} GB, "
          f"first-order {(fixed + 256 * per_image['first']) / GB:.1f} GB")
    for budget in (12, 16, 24, 80):
        m = largest_micro_batch(budget * GB, per_image["exact"], per_image["first"], fixed)
        peak = None if m is None else fixed + max(m * per_image["exact"],
                                                  256 * per_image["first"])
        print(f"{budget} GB: meta.micro_batch <= {m}"
              + ("" if peak is None else f" (peak {peak / GB:.1f} GB)"))


if __name__ == "__main__":
    main()
