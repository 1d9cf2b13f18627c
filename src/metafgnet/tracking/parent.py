"""The parent run of one pipeline execution, shared by all its stage processes.

Found by the tags ``metafgnet.role = 'pipeline'`` and ``metafgnet.execution_id`` (see
:mod:`metafgnet.tracking.execution`), else created by the execution's first stage: named after
``DVC_EXP_NAME`` (else ``<git rev>-<YYYYmmdd-HHMMSS>``), with every params section as params.

Status: RUNNING while one of its stages runs, FINISHED between stages; FAILED (or KILLED) once
a stage fails and from then on, even if later stages of the same execution succeed
(``dvc repro --keep-going``).
"""

from __future__ import annotations

import time

from metafgnet.tracking import run_tags
from metafgnet.tracking.experiment import store_lock
from metafgnet.tracking.uri import is_remote
from metafgnet.tracking.writer import RunSpec, end_run, start_run

SETTLE_S = 0.5  # spent in the background opener, and only by an execution's first stage


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
