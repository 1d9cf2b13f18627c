"""The headline figures of the pipeline state in the workspace, for comparing executions.

Read from the DVC outputs, not from the stages that ran: an execution that re-ran only
meta-training and what follows still reports the arms, selection and costs of the stages DVC
reused. The names group in the MLflow UI by their ``/`` prefix:

- ``val_top1/<arm>``, ``test_top1/<arm>``, ``test_mean_class_acc/<arm>`` for every arm, and
  ``test_top1/best`` (the arm with the best validation top-1, named by the ``best_arm`` tag);
- ``selection/<measure>``: kept fraction, and with ground truth ROC AUC, precision at k,
  precision of the kept set, related base rate (:mod:`metafgnet.selection.quality`);
- ``cost/<stage>/<figure>`` for every meta-training stage: median seconds per meta-iteration,
  images/s, peak memory (:mod:`metafgnet.training.cost`).
"""

from __future__ import annotations

import math
from pathlib import Path

from metafgnet.evaluation import ARMS
from metafgnet.io import read_json

META_STAGES = ("meta_train", "meta_train_selected", "meta_train_random")
SELECTION_KEYS = ("selected_fraction", "roc_auc", "precision_at_related", "selection_precision",
                  "related_base_rate", "related_recall")


def headline(metrics_dir: Path, best: dict) -> tuple[dict[str, float], dict[str, str]]:
    """``(metrics, tags)`` of the workspace's pipeline state; ``best``: ``best.json`` of the
    ``evaluate`` stage."""
    arms = read_json(metrics_dir / "evaluate.json")
    out: dict[str, float] = {}
    for arm in ARMS:
        for key, value in arms[arm].items():
            out[f"{key}/{arm}"] = float(value)
    out["test_top1/best"] = out[f"test_top1/{best['best_arm']}"]
    select = read_json(metrics_dir / "select.json")
    out.update({f"selection/{k}": float(select[k]) for k in SELECTION_KEYS if k in select})
    for stage in META_STAGES:
        cost = read_json(metrics_dir / f"{stage}.json").get("cost", {})
        out.update({f"cost/{stage}/{k}": float(v) for k, v in cost.items()
                    if isinstance(v, int | float)})
    return ({k: v for k, v in out.items() if math.isfinite(v)},
            {"best_arm": best["best_arm"]})
