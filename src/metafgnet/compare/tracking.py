"""One MLflow run per comparison, linking the executions it summarises.

The run (tag ``metafgnet.role = compare``) carries the paired differences and cost ratios as
metrics (``diff/test_top1/<arm>``, ``diff_low/...``, ``diff_high/...``, ``diff_boot_low/...``,
``diff_boot_high/...``, ``mde/...``; the arm contrasts as ``contrast_diff/<level>/test_top1/
metafgnet-finetune`` and so on; ``cost_ratio/<stage>/seconds_per_iter``), the summary files as artifacts, and the ids of the
parent runs of the grid's executions (tag ``compare.parent_runs``; its description links them).
"""

from __future__ import annotations

import math
from pathlib import Path

from metafgnet.params import TrackingParams
from metafgnet.tracking import run_tags
from metafgnet.tracking.writer import RunSpec, end_run, start_run


def _parents(client, experiment_id: str, names: list[str]) -> dict[str, str]:
    """Latest parent run id per DVC experiment name (the execution that produced it)."""
    found = {}
    for name in names:
        runs = client.search_runs(
            [experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
            filter_string=(f"tags.`{run_tags.ROLE}` = 'pipeline' and "
                           f"tags.`{run_tags.DVC_EXP_NAME}` = '{name}'"))
        if runs:
            found[name] = runs[0].info.run_id
    return found


def _metrics(summary: dict) -> dict[str, float]:
    out = {}
    for cond in summary["conditions"]:
        prefix = "".join(f"{v}/" for v in cond["condition"].values())
        stats = (("mean", "diff"), ("low", "diff_low"), ("high", "diff_high"),
                 ("boot_low", "diff_boot_low"), ("boot_high", "diff_boot_high"), ("mde", "mde"))
        for arm, keys in cond.get("difference", {}).items():
            for key, d in keys.items():
                for stat, name in stats:
                    out[f"{name}/{prefix}{key}/{arm}"] = d[stat]
        for level, pairs in cond.get("contrasts", {}).items():
            for pair, keys in pairs.items():
                for key, d in keys.items():
                    for stat, name in stats:
                        out[f"contrast_{name}/{prefix}{level}/{key}/{pair}"] = d[stat]
        for stage, ratios in cond.get("cost_ratio", {}).items():
            for key, value in ratios.items():
                out[f"cost_ratio/{prefix}{stage}/{key}"] = value
    return {k: float(v) for k, v in out.items() if math.isfinite(v)}


def log_comparison(summary: dict, names: list[str], out: Path, tracking: TrackingParams,
                   root: Path, command: str) -> str:
    """Log the comparison run; returns its id."""
    from mlflow.entities import Metric

    from metafgnet.tracking.experiment import open_session

    session = open_session(tracking, root)
    client = session.client
    parents = _parents(client, session.experiment_id, names)
    factor = summary["factor"] or "seed sweep"
    links = "\n".join(f"- `{n}`: [{parents[n]}](#/experiments/{session.experiment_id}/runs/"
                      f"{parents[n]})" if n in parents else f"- `{n}`: no MLflow run found"
                      for n in names)
    note = f"`{command}`\n\nExecutions summarised (parent runs):\n{links}\n"
    tags = {"compare.experiments": " ".join(names),
            "compare.parent_runs": " ".join(parents.get(n, "") for n in names).strip(),
            "mlflow.note.content": note}
    params = {"compare.factor": factor, "compare.levels": ",".join(summary["levels"]),
              "compare.seeds": ",".join(map(str, summary["seeds"])),
              "compare.num_threads": ",".join(sorted({
                  str(t) for c in summary["conditions"] for per in c.get("threads", {}).values()
                  for t in per.values()}))}
    run_id = start_run(client, session.experiment_id, RunSpec(
        f"compare {factor} over seeds {','.join(map(str, summary['seeds']))}", "compare",
        tags, params))
    client.log_batch(run_id,
                     metrics=[Metric(k, v, 0, 0) for k, v in _metrics(summary).items()])
    client.log_artifacts(run_id, str(out))
    end_run(client, run_id)
    return run_id
