"""The tracking session of one stage process: resolved URI, client and experiment id.

Offline mode: an http(s) tracking URI is probed first (:func:`resolve_target`). When it does
not answer, the stage fails within seconds naming the URI -- there is no silent fallback --
unless ``tracking.offline: true`` opts in; then runs go to the local repository database
(``sqlite:////<root>/mlflow.db``, as without ``MLFLOW_TRACKING_URI``) and carry the tags
``tracking.offline = true`` and ``tracking.intended_uri``, so they can be found and re-logged
(``mlflow`` has no built-in sync) once the server is back.

The experiment is created once, with an absolute artifact location for local stores, by
whichever process gets there first; a process that loses the creation race fetches the
experiment the winner made. A fresh sqlite database is initialised (schema migrations) under an
exclusive file lock, so that two stage processes starting together cannot both migrate it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

from metafgnet.io import file_lock
from metafgnet.params import TrackingParams
from metafgnet.tracking import uri as uri_mod

log = logging.getLogger(__name__)

# A model-training experiment: the MLflow 3 UI opens on its runs, not on GenAI traces. (The
# runs-table view comparing executions, metafgnet.tracking.views, is set by the report stage.)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


@dataclasses.dataclass(frozen=True)
class Session:
    """Where this process records: ``uri`` (after any offline fallback) and the experiment."""

    uri: str
    experiment_id: str
    client: object  # mlflow.MlflowClient; typed loosely so importing this module stays cheap


def store_lock(uri: str, purpose: str) -> contextlib.AbstractContextManager:
    """Exclusive lock beside a sqlite database (``<db>-<purpose>.lock``); no-op for servers.

    Serialises short critical sections between the processes (and threads) of this machine:
    schema creation of a fresh database, creation of an execution's parent run.
    """
    db = uri_mod.sqlite_path(uri)
    if db is None:
        return contextlib.nullcontext()
    return file_lock(db.with_name(f"{db.name}-{purpose}.lock"))


def ensure_experiment(client, name: str, artifact_location: str | None) -> str:
    """Id of experiment ``name``, creating it (race-safe) when missing."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(
                name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise uri_mod.TrackingError(
            f"MLflow experiment {name!r} is deleted; restore it (`mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}`) or set another `tracking.experiment`."
        )
    for key, value in EXPERIMENT_TAGS.items():
        if exp.tags.get(key) != value:  # an experiment made before this version, or by hand
            client.set_experiment_tag(exp.experiment_id, key, value)
    if artifact_location and exp.artifact_location != artifact_location:
        log.warning(
            "experiment %r stores artifacts at %s, not %s", name, exp.artifact_location,
            artifact_location,
        )
    return exp.experiment_id


@dataclasses.dataclass(frozen=True)
class Target:
    """The resolved, probed tracking URI (cheap to get: MLflow is not imported)."""

    uri: str
    intended_uri: str | None = None  # offline (``tracking.offline``): the unreachable server


def resolve_target(tracking: TrackingParams, root: str | Path | None = None) -> Target:
    """Resolve and probe the tracking URI.

    An unreachable server raises :class:`~metafgnet.tracking.uri.TrackingUnavailable` within
    seconds, unless ``tracking.offline`` opts in to the local repository database.
    """
    uri_mod.configure_environment()
    uri = uri_mod.tracking_uri(root)
    try:
        uri_mod.probe(uri)
    except uri_mod.TrackingUnavailable as exc:
        if not tracking.offline:
            raise
        local = uri_mod.local_uri(root)
        log.warning("%s -- tracking.offline is set: recording to %s", exc, local)
        return Target(local, intended_uri=uri)
    return Target(uri)


def connect(target: Target, tracking: TrackingParams, root: str | Path | None = None) -> Session:
    """Import MLflow, open the store and get or create the experiment (slow: the MLflow import
    and a fresh database's schema migration; callers keep one session per process).

    Safe to run off the main thread: it sets no global MLflow state (``set_tracking_uri``
    writes the process environment, which must not race with C code reading it).
    """
    import mlflow

    # Constructing the client opens the store, and migrates the schema of a fresh database.
    with store_lock(target.uri, "init"):
        client = mlflow.MlflowClient(tracking_uri=target.uri)
        experiment_id = ensure_experiment(
            client, tracking.experiment, uri_mod.artifact_location(target.uri, root)
        )
    return Session(target.uri, experiment_id, client)


def open_session(tracking: TrackingParams, root: str | Path | None = None) -> Session:
    """:func:`resolve_target` then :func:`connect`, and make the URI MLflow's default."""
    import mlflow

    session = connect(resolve_target(tracking, root), tracking, root)
    mlflow.set_tracking_uri(session.uri)
    return session
