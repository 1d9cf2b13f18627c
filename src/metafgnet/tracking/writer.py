"""The one way an MLflow run of this package is created and ended: a stage's child run, an
execution's parent, a study's parent and its trials, a comparison. Every param value, tag and
error text leaves out the user information of URLs (:mod:`metafgnet.credentials`). Takes an
``mlflow.MlflowClient``; importing this module does not import MLflow."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from metafgnet.credentials import redact_text
from metafgnet.tracking import run_tags

ERROR_CHARS = 5000  # an error tag's text is cut to this length
STATUSES = ("FINISHED", "FAILED", "KILLED")  # how a run ends


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
