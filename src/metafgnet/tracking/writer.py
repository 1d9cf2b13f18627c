"""The one way an MLflow run of this package is created and ended: a stage's child run, an
execution's parent, a study's parent and its trials, a comparison. Every param value, tag and
error text leaves out the user information of URLs (:mod:`metafgnet.credentials`). Takes an
``mlflow.MlflowClient``; importing this module does not import MLflow.

The parent run of one pipeline execution, shared by all its stage processes, is found by the tags
``metafgnet.role = 'pipeline'`` and ``metafgnet.execution_id`` (see
:mod:`metafgnet.tracking.execution`), else created by the execution's first stage
(:func:`find_or_create_parent`). Its status: RUNNING while one of its stages runs, FINISHED
between stages; FAILED (or KILLED) once a stage fails and from then on, even if later stages of
the same execution succeed (``dvc repro --keep-going``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from metafgnet.credentials import redact_text
from metafgnet.tracking import run_tags
from metafgnet.tracking.experiment import store_lock
from metafgnet.tracking.uri import is_remote

ERROR_CHARS = 5000  # an error tag's text is cut to this length
STATUSES = ("FINISHED", "FAILED", "KILLED")  # how a run ends
SETTLE_S = 0.5  # spent in the background opener, and only by an execution's first stage


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What one run is. ``parent_id``: the run it is nested under. ``source``: the creating
    process's MLflow source tags (:func:`metafgnet.tracking.run_tags.source_tags`); when given,
    MLflow's context tags are resolved around them, else the run carries only ``tags``."""

    name: str
    role: str
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    parent_id: str | None = None
    source: Mapping[str, str] | None = None


def error_text(text: str) -> str:
    """``text`` as an error tag holds it: URLs without user information, cut."""
    return redact_text(text)[:ERROR_CHARS]


def start_run(client, experiment_id: str, spec: RunSpec) -> str:
    """Create the run ``spec`` describes (RUNNING): its tags with the role
    (``metafgnet.role``), the parent link and the git commit as MLflow's source commit, and its
    params. Returns its id."""
    from mlflow.entities import Param

    tags = {**(spec.source or {}), **{k: redact_text(str(v)) for k, v in spec.tags.items()},
            run_tags.ROLE: spec.role}
    if spec.parent_id is not None:
        tags["mlflow.parentRunId"] = spec.parent_id
    if run_tags.GIT_COMMIT in tags:
        tags["mlflow.source.git.commit"] = tags[run_tags.GIT_COMMIT]
    if spec.source is not None:
        from mlflow.tracking.context.registry import resolve_tags

        tags = resolve_tags(tags)
    run_id = client.create_run(experiment_id, run_name=spec.name, tags=tags).info.run_id
    if spec.params:
        client.log_batch(run_id, params=[Param(k, run_tags.param_value(v))
                                         for k, v in spec.params.items()])
    return run_id


def end_run(client, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
    """End ``run_id`` with ``status``; ``error`` (if any) becomes its ``error`` tag first."""
    if status not in STATUSES:
        raise ValueError(f"run status {status!r}: expected one of {', '.join(STATUSES)}")
    if error:
        client.set_tag(run_id, run_tags.ERROR, error_text(error))
    client.set_terminated(run_id, status)


def _search(client, experiment_id: str, execution: str) -> list:
    runs = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{run_tags.ROLE}` = 'pipeline' and "
                       f"tags.`{run_tags.EXECUTION}` = '{execution}'"),
        max_results=50,
    )
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def parent_name(tags: dict[str, str]) -> str:
    """The DVC experiment's name (else ``<git rev>-<YYYYmmdd-HHMMSS>``), then what differs
    from the baseline commit: ``first-order meta.order=first``; ``... baseline`` when
    nothing does."""
    name = tags.get(run_tags.DVC_EXP_NAME) or "-".join(
        filter(None, [tags.get(run_tags.GIT_COMMIT, "")[:7], time.strftime("%Y%m%d-%H%M%S")]))
    return f"{name} {tags.get(run_tags.OVERRIDES) or 'baseline'}"


def find_or_create_parent(session, spec: RunSpec) -> str:
    """Run id of this execution's parent run (``spec``: every params section, dotted, and the
    execution's tags), created if this is its first stage.

    Stages of one execution normally run one after another. Should two start together, a local
    store serialises them with a file lock; against a server each creator waits
    ``SETTLE_S`` for the other's run to become visible, then all keep the earliest parent and
    the others delete theirs.
    """
    client, execution = session.client, spec.tags[run_tags.EXECUTION]
    with store_lock(session.uri, "parent"):
        found = _search(client, session.experiment_id, execution)
        if found:
            return found[0].info.run_id
        mine = start_run(client, session.experiment_id, spec)
        if is_remote(session.uri):
            time.sleep(SETTLE_S)
        winner = _search(client, session.experiment_id, execution)[0].info.run_id
        if winner != mine:
            client.delete_run(mine)
        return winner


def mark_parent(client, parent_id: str, status: str) -> None:
    """Move the parent to ``status``; a FAILED parent stays FAILED."""
    if client.get_run(parent_id).info.status == "FAILED":
        return
    if status == "RUNNING":
        client.update_run(parent_id, status="RUNNING")
    else:
        end_run(client, parent_id, status)
