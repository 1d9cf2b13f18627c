"""Stage `evaluate`: validation and test accuracy of every arm; the best arm chosen on val."""

import argparse
from pathlib import Path

from metafgnet.stages.context import open_stage
from metafgnet.stages.evaluate_stage import run_evaluate

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared manifests folder")
    parser.add_argument("--models", type=Path, default=Path("models/finetune"))
    parser.add_argument("--out", type=Path, default=Path("results/evaluate"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/evaluate.json"))
    args = parser.parse_args()
    with open_stage("evaluate", ["data", "runtime"], data=args.data, lineage=True) as ctx:
        run_evaluate(ctx, args.models, args.out, args.metrics)
