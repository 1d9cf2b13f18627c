"""Stages `meta_train` / `meta_train_selected`: MetaFGNet meta-training
(docs/method.md, stages 2 and 4)."""

import argparse
from pathlib import Path

from metafgnet.stages.context import open_stage
from metafgnet.stages.training_stages import run_meta_train

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared manifests folder")
    parser.add_argument("--init", type=Path, required=True, help="model directory to start from")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True, help="metrics file (git-tracked)")
    parser.add_argument("--selection", type=Path, help="selected.csv of the select stage")
    args = parser.parse_args()
    name = "meta_train" if args.selection is None else "meta_train_selected"
    with open_stage(name, ["seed", "data", "meta", "runtime"], data=args.data) as ctx:
        run_meta_train(ctx, args.init, args.out, args.metrics, args.selection)
