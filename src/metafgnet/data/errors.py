"""The one exception of the data package and the helpers that phrase its messages."""

from __future__ import annotations

from pathlib import Path

from metafgnet.errors import UserError


class DataError(ValueError, UserError):
    """A dataset on disk is missing, inconsistent or unreadable (missing root, inconsistent
    metadata, unreadable images, class-count mismatch); the message says what was expected,
    where, and how to fix it."""


def require_dir(root: str | Path, what: str, expected: str, source: str) -> Path:
    """``root`` as a Path if it is an existing folder, else a :class:`DataError` naming the
    dataset (``what``), what the folder should contain (``expected``) and where the dataset
    comes from (``source``: a download page or the pipeline stage that writes it)."""
    path = Path(root)
    if path.is_file():
        raise DataError(
            f"{what}: {path} is a file, expected a folder (the dataset root containing {expected})"
        )
    if not path.is_dir():
        raise DataError(
            f"{what}: dataset root {path} does not exist; expected a folder containing "
            f"{expected}. {source}"
        )
    return path


def short_list(items: list[str], limit: int = 10) -> str:
    """``a, b, c`` for at most ``limit`` items, then ``... (N more)``."""
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return shown
