"""Stage `joint`: the multi-task baseline (target + auxiliary cross-entropy, no meta-learning)."""

import argparse
from pathlib import Path

from metafgnet.stages.context import open_stage
from metafgnet.stages.joint_stage import run_joint

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared manifests folder")
    parser.add_argument("--init", type=Path, default=Path("models/pretrain"))
    parser.add_argument("--out", type=Path, default=Path("models/joint"))
    args = parser.parse_args()
    with open_stage("joint", ["seed", "data", "joint", "runtime"], data=args.data) as ctx:
        run_joint(ctx, args.init, args.out)
