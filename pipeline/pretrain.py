"""Stage `pretrain`: source pretraining on the auxiliary set (docs/method.md, stage 1)."""

import argparse
from pathlib import Path

from metafgnet.stages.context import open_stage
from metafgnet.stages.pretrain_stage import run_pretrain

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared manifests folder")
    parser.add_argument("--out", type=Path, default=Path("models/pretrain"))
    args = parser.parse_args()
    with open_stage("pretrain", ["data", "model", "pretrain", "runtime"], data=args.data) as ctx:
        run_pretrain(ctx, args.out)
