"""Stage `select`: score the auxiliary images with the meta-trained model (docs/method.md, stage 3).

(Not named select.py: a script folder is first on sys.path and would shadow the stdlib module.)
"""

import argparse
from pathlib import Path

from metafgnet.stages.context import open_stage
from metafgnet.stages.selection_stage import run_select

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared manifests folder")
    parser.add_argument("--init", type=Path, default=Path("models/meta_train"))
    parser.add_argument("--out", type=Path, default=Path("results/select"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/select.json"))
    args = parser.parse_args()
    with open_stage("select", ["data", "select", "runtime"], data=args.data) as ctx:
        run_select(ctx, args.init, args.out, args.metrics)
