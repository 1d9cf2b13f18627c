"""Stage `report`: the Markdown report with every arm, selection figures and plots."""

import argparse
from pathlib import Path

from metafgnet.reporting.report import build_report
from metafgnet.stages.context import open_stage

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/report"))
    args = parser.parse_args()
    with open_stage("report", ["data"], needs_data=False) as ctx:
        path = build_report(Path("results"), Path("models"), args.out, ctx.params.data.target)
        ctx.run.log_artifacts(args.out)
