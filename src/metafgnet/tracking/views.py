"""A saved view of the experiment's runs table that puts each execution's switch beside its result.

The MLflow UI loads a shared view from an experiment tag ``mlflow.sharedViewState.<key>`` (the
runs page's "Share" button writes the same) when the page is opened with
``?viewStateShareKey=<key>``. The view this package writes, ``compare``, shows only the
executions' parent runs (``metafgnet.role = pipeline``), newest first, with the columns a
comparison reads: the compared params (``meta.order``, ``seed``), every arm's test top-1 and the
meta-training cost, grouped by :data:`GROUP_BY` with MLflow's own run grouping: per value of
``meta.order`` one row with the average of its executions, the executions listed below it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

COMPARE_VIEW = "compare"
TAG_PREFIX = "mlflow.sharedViewState."
PARAMS = ("meta.order", "seed")
GROUP_BY = "meta.order"  # the param whose values the view's groups are


def compare_view_state(arms: Sequence[str]) -> str:
    """The view's state, as the UI stores it (JSON; keys of the runs page's search and UI
    state, columns as ``params.`<key>``` / ``metrics.`<key>```). ``groupBy`` is the UI's run
    grouping (``{aggregateFunction: min | average | max, groupByKeys: [{mode: param | tag |
    dataset, groupByData: <key>}]}``, what the runs page's "Group by" control stores); the
    groups open expanded, as the UI's own default."""
    return json.dumps({
        "searchFilter": "tags.`metafgnet.role` = 'pipeline'",
        "orderByKey": "attributes.start_time", "orderByAsc": False,
        # few enough columns to be drawn at once (the table draws only those in view, metrics
        # first, alphabetically, then params); any other is one click away under "Columns"
        "selectedColumns": [*(f"params.`{p}`" for p in PARAMS),
                            *(f"metrics.`test_top1/{arm}`" for arm in arms),
                            "metrics.`cost/meta_train/seconds_per_iter`",
                            "metrics.`cost/meta_train/peak_memory_mib`"],
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "param", "groupByData": GROUP_BY}]},
    })


def view_tags(arms: Sequence[str]) -> dict[str, str]:
    """Experiment tags that install the view of ``arms`` (set by the report stage:
    ``StageRun.set_experiment_tags``)."""
    return {TAG_PREFIX + COMPARE_VIEW: compare_view_state(arms)}


# The UI has two modes, GenAI (its default: an experiment opens on a traces overview) and model
# training (it opens on the runs table); the ``workflowType`` query parameter picks one.
TRAINING_MODE = "workflowType=machine_learning"


def experiment_url(ui: str, experiment_id: str) -> str:
    """The experiment's runs table in the UI at ``ui`` (e.g. ``http://127.0.0.1:5000``)."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}?{TRAINING_MODE}"


def compare_view_url(ui: str, experiment_id: str) -> str:
    """Where the comparison view opens in the UI at ``ui``."""
    return (f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{TRAINING_MODE}"
            f"&viewStateShareKey={COMPARE_VIEW}")
