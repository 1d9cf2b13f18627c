"""Stages `meta_train` / `meta_train_selected` / `meta_train_random`: MetaFGNet meta-training
(docs/method.md, stages 2 and 4; the last the control for selection)."""

import argparse
from pathlib import Path

from metafgnet.stages.context import open_stage
from metafgnet.stages.meta_train_stage import run_meta_train

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared manifests folder")
    parser.add_argument("--init", type=Path, required=True, help="model directory to start from")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True, help="metrics file (git-tracked)")
    parser.add_argument("--selection", type=Path, help="selected.csv of the select stage")
    parser.add_argument("--random-like", action="store_true",
                        help="the control: a random subset of the selection's size instead")
    args = parser.parse_args()
    if args.random_like and args.selection is None:
        parser.error("--random-like draws a subset of the size of --selection: pass "
                     "--selection results/select/selected.csv")
    name = ("meta_train" if args.selection is None
            else "meta_train_random" if args.random_like else "meta_train_selected")
    sections = ["seed", "data", "meta", *(["select"] if args.random_like else []), "runtime"]
    with open_stage(name, sections, data=args.data) as ctx:
        run_meta_train(ctx, args.init, args.out, args.metrics, args.selection, args.random_like)
