"""Credentials stay in the environment: every URL the package shows, logs or stores is redacted.

A tracking or storage URL may carry ``user:password@``; params files are committed to git and
params are logged to MLflow, so the package never writes the user information of a URL
anywhere: :func:`redact_text` removes it from a URL or from free text holding URLs (a logged
param value, a params override, an error message). This module is the one home of that rule.

The password itself belongs in the environment, read by the client that connects:

* MLflow tracking server: ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (or
  ``MLFLOW_TRACKING_TOKEN``), read by MLflow's own HTTP client;
* ``tune.storage`` on PostgreSQL: a URL without password (``postgresql://user@host/db``) and
  libpq's ``PGPASSWORD`` or ``~/.pgpass``, read by the driver at connect time.
"""

from __future__ import annotations

import re

# scheme://userinfo@ : the user information ends at the last "@" before the path
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")


def redact_text(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it removed."""
    return _USERINFO.sub(r"\g<scheme>", text)


def auth_hint(error_text: str) -> str:
    """What to do about a tracking server's refusal in ``error_text`` (MLflow's messages name
    the HTTP status as ``error code 401``), or ``""``."""
    if "error code 401" in error_text:
        return ("the tracking server wants credentials: set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD in the environment (never in the URL)")
    if "error code 403" in error_text:
        return ("the tracking server's user lacks a permission: ask its admin for EDIT on the "
                "experiment (tracking.experiment) or the registered model")
    return ""
