"""Where a result came from: git revision, dirty flag, DVC experiment variables."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_output(*args: str, cwd: str | Path | None = None) -> str | None:
    """Stripped stdout of ``git *args`` in ``cwd``; None when git is missing or fails."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def repo_root(cwd: str | Path | None = None) -> Path:
    """The repository root: ``DVC_ROOT``, else the git top level of ``cwd``, else ``cwd``.

    ``cwd`` defaults to the current directory. ``DVC_ROOT`` names the real repository even
    inside the throw-away copies DVC runs queued and ``--temp`` experiments in. Not cached: the
    answer depends on the current directory and the environment, and one git call is cheap.
    """
    if dvc_root := os.environ.get("DVC_ROOT"):
        return Path(dvc_root).resolve()
    here = Path(cwd or os.getcwd()).resolve()
    top = git_output("rev-parse", "--show-toplevel", cwd=here)
    return Path(top).resolve() if top else here


def git_revision(cwd: str | Path | None = None) -> str | None:
    """Commit checked out in ``cwd`` (in a DVC experiment copy: the experiment's baseline).

    None outside git (or when git is missing): callers record "unknown" as absent rather than
    as a made-up revision.
    """
    return git_output("rev-parse", "HEAD", cwd=cwd)


def git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether tracked files differ from the commit, ignoring what the pipeline writes.

    DVC rewrites ``dvc.lock`` after every stage, and stages write the git-tracked metrics
    files under ``metrics/``, so counting them would mark every later stage (and its model
    file) dirty. ``params.yaml`` edited by ``dvc exp run -S`` does count. None when git
    cannot tell (outside git, git missing).
    """
    status = git_output("status", "--porcelain", "--untracked-files=no", "--", ".",
                        ":(exclude,glob)**/dvc.lock", ":(exclude,glob)metrics/**", cwd=cwd)
    return None if status is None else bool(status)
