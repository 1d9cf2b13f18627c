"""Where runs are recorded: one tracking location per repository, probed before any work.

Resolution rule (:func:`tracking_uri`):

1. ``MLFLOW_TRACKING_URI`` when set (a relative ``sqlite:///`` path in it is taken relative to
   the repository root, not to the current directory, because DVC runs queued and ``--temp``
   experiments in throw-away copies under ``.dvc/tmp/exps``);
2. otherwise ``sqlite:////<root>/mlflow.db``, an absolute path at the repository root. The root is
   ``DVC_ROOT`` (DVC sets it to the real repository even inside experiment copies), else the git
   top level of the current directory, else the current directory.

Artifacts of a local store go beside its database (``<dir of mlflow.db>/mlartifacts``, a
``file://`` URI); a tracking server decides its own artifact store.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from metafgnet.credentials import redact_text
from metafgnet.errors import UserError
from metafgnet.provenance import repo_root

DB_NAME = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
PROBE_TIMEOUT_S = 3.0
_REACHABLE = (200, 401, 403)

# MLflow's HTTP client retries 7 times with backoff factor 2 and a 120 s timeout by default
# (minutes when a server is down or hung); these bounds keep a lost server from stalling a stage
# (a down server is caught earlier by `probe`). The timeout also bounds one artifact upload:
# raise MLFLOW_HTTP_REQUEST_TIMEOUT for big models over slow links. Explicit settings win.
_ENV_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


class TrackingError(RuntimeError, UserError):
    """Tracking cannot record this stage; the message says what to change."""


class TrackingUnavailable(TrackingError):
    """The tracking server does not answer."""


class AgentLost(TrackingError):
    """The stage's tracking agent went away: what it held cannot be sent any more."""


def configure_environment() -> None:
    """Telemetry off and bounded HTTP retries, unless the environment already says otherwise."""
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def local_uri(root: str | Path | None = None) -> str:
    """``sqlite:////<root>/mlflow.db`` with an absolute path."""
    root = Path(root).resolve() if root is not None else repo_root()
    return f"sqlite:///{root / DB_NAME}"


def tracking_uri(root: str | Path | None = None) -> str:
    """The one tracking URI for this repository (see the module docstring for the rule)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not env:
        return local_uri(root)
    if env.startswith("sqlite:///") and not env.removeprefix("sqlite:///").startswith("/"):
        base = Path(root).resolve() if root is not None else repo_root()
        return f"sqlite:///{base / env.removeprefix('sqlite:///')}"
    return env


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def artifact_location(uri: str, root: str | Path | None = None) -> str | None:
    """Absolute ``file://`` artifact root for a local store; None for a tracking server."""
    if is_remote(uri):
        return None
    db = sqlite_path(uri)
    base = db.parent if db is not None else (Path(root).resolve() if root else repo_root())
    return (base / ARTIFACT_DIR).as_uri()


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`TrackingUnavailable` unless an http(s) tracking server answers ``/health``.

    Reachable: ``200`` (MLflow answers "OK"), or ``401``/``403`` from an authenticating proxy in
    front of it (credentials are MLflow's business). Refused connections, timeouts and any other
    answer are not: a ``404`` means something else listens there (on this project's sandbox,
    even unroutable addresses get one from the network). Local stores are not probed.
    """
    if not is_remote(uri):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http only)
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnavailable(_unreachable(uri, f"{reason}", timeout)) from None
    if status not in _REACHABLE:
        reason = f"HTTP {status} from /health: not an MLflow tracking server?"
        raise TrackingUnavailable(_unreachable(uri, reason, timeout))


def _unreachable(uri: str, reason: str, timeout: float) -> str:
    return (
        f"MLflow tracking server {redact_text(uri)} is unreachable ({reason}; probed "
        f"{redact_text(uri).rstrip('/')}/health with a {timeout:g} s timeout). Start the server, "
        "point MLFLOW_TRACKING_URI at a running one, or set `tracking.offline: true` in "
        f"params.yaml to record runs in the local repository database ({local_uri()}) instead."
    )
