"""What every run records: tag keys, provenance tags and params flattened to dotted keys."""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import sys
from collections.abc import Sequence
from typing import Any

import metafgnet
from metafgnet.credentials import redact_text
from metafgnet.params import Params, flatten, to_dict
from metafgnet.provenance import git_dirty, git_revision
from metafgnet.tracking.execution import execution_id, params_overrides

# Tag keys (searchable as tags.`<key>` in the MLflow UI and client).
ROLE = "metafgnet.role"  # "pipeline" (the parent of one execution) or "stage"
EXECUTION = "metafgnet.execution_id"
VERSION = "metafgnet.version"
STAGE = "stage"
SEED = "seed"
DEVICE = "device"
DATA_DIGEST = "data.manifest_digest"
DVC_EXP_NAME = "dvc.exp_name"
DVC_BASELINE = "dvc.exp_baseline_rev"
OVERRIDES = "params.overrides"  # what differs from the baseline commit: "meta.order=first"
GIT_COMMIT = "git.commit"
GIT_DIRTY = "git.dirty"
OFFLINE = "tracking.offline"
INTENDED_URI = "tracking.intended_uri"
STAGES_RAN = "stages.ran"  # parent: pipeline stages this execution ran ...
STAGES_REUSED = "stages.reused"  # ... and those whose outputs DVC reused
ERROR = "error"
FAILED_STAGE = "failed_stage"

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def param_value(v: Any) -> str:
    """``str(v)`` without the user information of any URL in it
    (:func:`metafgnet.credentials.redact_text`: ``tune.storage`` may name a password), cut to
    MLflow's limit on a param value."""
    text = redact_text(str(v))
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def stage_params(params: Params, sections: Sequence[str]) -> dict[str, str]:
    """The resolved params sections a stage reads, as ``{"meta.inner_lr": "0.01", ...}``.

    ``seed`` is always included. Unknown section names raise ``ValueError``.
    """
    valid = [f.name for f in dataclasses.fields(params)]
    out: dict[str, Any] = {"seed": params.seed}
    for section in sections:
        if section not in valid:
            raise ValueError(f"unknown params section {section!r}; valid: {', '.join(valid)}")
        value = getattr(params, section)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        if isinstance(value, dict):
            out.update(flatten({section: value}) if value else {section: "{}"})
        else:
            out[section] = value
    return {k: param_value(v) for k, v in out.items()}


def all_params(params: Params) -> dict[str, str]:
    """Every params section flattened (logged once on the execution's parent run)."""
    return stage_params(params, [f.name for f in dataclasses.fields(params) if f.name != "seed"])


def source_tags() -> dict[str, str]:
    """MLflow's own source tags for this (stage) process: the script, the user, LOCAL.

    Set explicitly because the runs may be created by the tracking agent, whose script MLflow
    would otherwise record as the source.
    """
    tags = {"mlflow.source.type": "LOCAL"}
    if sys.argv and sys.argv[0] not in ("", "-c"):
        tags["mlflow.source.name"] = os.path.abspath(sys.argv[0])
    with contextlib.suppress(KeyError, OSError):  # no user entry (some containers)
        tags["mlflow.user"] = getpass.getuser()
    return tags


def provenance_tags(params: Params, data_digest: str | None = None,
                    device: str | None = None) -> dict[str, str]:
    """Tags shared by parent and child runs: code, DVC experiment, seed, device, data."""
    rev, dirty = git_revision(), git_dirty()
    # {"meta.order": "first", "seed": "1"} -> "meta.order=first seed=1", URLs redacted
    overrides = " ".join(f"{k}={v}" for k, v in sorted(params_overrides().items()))
    tags = {
        EXECUTION: execution_id(),
        VERSION: metafgnet.__version__,
        SEED: str(params.seed),
        DEVICE: device or params.runtime.device,
        DVC_EXP_NAME: os.environ.get("DVC_EXP_NAME", ""),
        DVC_BASELINE: os.environ.get("DVC_EXP_BASELINE_REV", ""),
        GIT_COMMIT: rev or "",
        GIT_DIRTY: "" if dirty is None else str(dirty).lower(),
        OVERRIDES: redact_text(overrides),
    }
    if data_digest:
        tags[DATA_DIGEST] = data_digest
    return {k: v for k, v in tags.items() if v != ""}


def execution_note(parent_tags: dict[str, str], ran: list[str], reused: list[str],
                   metrics: dict[str, float], tags: dict[str, str]) -> str:
    """The parent run's description (Markdown): what differs from the baseline, what ran,
    what was reused, and the headline."""
    base = (parent_tags.get(DVC_BASELINE) or parent_tags.get(GIT_COMMIT, ""))[:7] or "?"
    overrides = parent_tags.get(OVERRIDES)
    exp = parent_tags.get(DVC_EXP_NAME)
    lines = [f"**{overrides or 'no params changed'}** against baseline commit `{base}`"
             + (f" (DVC experiment `{exp}`)" if exp else "") + ".", "",
             f"Ran: {', '.join(ran) or 'nothing'}.",
             f"Reused from earlier executions (read from their DVC outputs): "
             f"{', '.join(reused) or 'nothing'}.", ""]
    if "best_arm" in tags:
        best = tags["best_arm"]
        lines.append(f"Best arm on validation: `{best}`, test top-1 "
                     f"{100 * metrics.get(f'test_top1/{best}', float('nan')):.2f} %.")
    return "\n".join(lines)
