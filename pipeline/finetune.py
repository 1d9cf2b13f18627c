"""Stage `finetune@<arm>`: fine-tune one arm on the target set (docs/method.md, stage 5)."""

import argparse
from pathlib import Path

from metafgnet.stages.context import open_stage
from metafgnet.stages.finetune_stage import run_finetune

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared manifests folder")
    parser.add_argument("--arm", required=True)
    parser.add_argument("--init", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="the arm's model folder "
                        "(default models/finetune/<arm>)")
    args = parser.parse_args()
    with open_stage(f"finetune@{args.arm}", ["seed", "data", "finetune", "runtime"], data=args.data) as ctx:
        run_finetune(ctx, args.init, args.out or Path("models/finetune") / args.arm)
