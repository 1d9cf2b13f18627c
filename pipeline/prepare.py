"""Stage `prepare`: generate the synthetic benchmark (if chosen) and write the split manifests."""

import argparse
from pathlib import Path

from metafgnet.stages.context import open_stage
from metafgnet.stages.prepare_stage import run_prepare

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/prepared"))
    args = parser.parse_args()
    with open_stage("prepare", ["data", "synthetic"]) as ctx:
        run_prepare(ctx.params, args.out)
