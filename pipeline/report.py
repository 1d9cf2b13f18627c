"""Stage `report`: the Markdown report, and the pipeline's headline on the execution's MLflow
parent run (including the stages DVC reused)."""

import argparse
from pathlib import Path

from metafgnet.stages.context import open_stage
from metafgnet.stages.report_stage import run_report

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))
    parser.add_argument("--leakage", type=Path,
                        default=Path("data/prepared/manifests/leakage.json"))
    parser.add_argument("--out", type=Path, default=Path("results/report"))
    args = parser.parse_args()
    with open_stage("report", ["data"], lineage=True) as ctx:
        run_report(ctx, args.results, args.models, args.metrics, args.leakage, args.out)
