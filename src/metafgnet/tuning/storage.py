"""Where a study lives, so that invocations resume it and several workers share it.

``tune.storage`` (or ``--storage``):

* ``""`` (default): ``sqlite:////<repo root>/optuna.db``, an absolute path, so DVC temp and
  queued experiment copies write the real repository's study (the root is ``DVC_ROOT``, else the
  git top level, else the current directory);
* any SQLAlchemy URL (``sqlite:///rel.db`` is made absolute against the repo root;
  ``postgresql://user@host/db`` lets processes on several machines share one study; give
  the password through libpq's ``PGPASSWORD`` or ``~/.pgpass``, not in the URL, which sits in
  the committed ``params.yaml``: :mod:`metafgnet.credentials`);
* ``journal:<path>``: Optuna's ``JournalFileBackend`` (a relative path is taken from the repo
  root). Optuna 5's journal storage has NO heartbeat: a trial whose worker was killed stays
  RUNNING for ever (and keeps its slot of the budget) until failed by hand
  (``metafgnet tune --fail-running``); prefer an RDB storage when workers may die.

RDB storages get heartbeats (``tune.heartbeat_interval``): a RUNNING trial silent for
``tune.grace_period`` seconds is marked FAIL by the next worker that looks, and the budget goes on.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from metafgnet.io import file_lock
from metafgnet.provenance import repo_root
from metafgnet.tracking.uri import sqlite_path
from metafgnet.tuning.schema import TuneParams

DB_NAME = "optuna.db"
JOURNAL_PREFIX = "journal:"
SQLITE_TIMEOUT_S = 60  # several workers write one sqlite file: wait for the lock, do not fail


def resolve_url(storage: str, root: str | Path | None = None) -> str:
    """The absolute storage URL of ``tune.storage`` (rules in the module docstring)."""
    base = Path(root).resolve() if root is not None else repo_root()
    storage = storage.strip()
    if not storage:
        return f"sqlite:///{base / DB_NAME}"
    if storage.startswith(JOURNAL_PREFIX):
        path = Path(storage.removeprefix(JOURNAL_PREFIX))
        return f"{JOURNAL_PREFIX}{path if path.is_absolute() else base / path}"
    if storage.startswith("sqlite:///"):
        path = storage.removeprefix("sqlite:///")
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{base / path}"
        return storage
    if "://" not in storage:
        raise ValueError(f"tune.storage: {storage!r} is neither a database URL "
                         f"(sqlite:///..., postgresql://...) nor {JOURNAL_PREFIX}<path>")
    return storage


def has_heartbeat(url: str) -> bool:
    return not url.startswith(JOURNAL_PREFIX)


def _init_lock(url: str) -> contextlib.AbstractContextManager:
    """Exclusive lock on a local storage file while its schema may be created: two workers
    starting together must not both create the tables of a fresh sqlite database. The file is
    locked as itself (``flock``, independent of sqlite's own locks), so no lock file is left
    behind (an empty file is a valid empty sqlite database). A no-op for servers."""
    path = (Path(url.removeprefix(JOURNAL_PREFIX)) if url.startswith(JOURNAL_PREFIX)
            else sqlite_path(url))
    if path is None or str(path) == ":memory:":
        return contextlib.nullcontext()
    return file_lock(path)


def open_storage(url: str, tune: TuneParams):
    """An Optuna storage for ``url`` (from :func:`resolve_url`); RDB ones with heartbeats."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    with _init_lock(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if url.startswith(JOURNAL_PREFIX):
            return JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL_PREFIX)))
        engine_kwargs = ({"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
                         if url.startswith("sqlite:") else None)
        return RDBStorage(url, engine_kwargs=engine_kwargs,
                          heartbeat_interval=tune.heartbeat_interval,
                          grace_period=tune.grace_period)
