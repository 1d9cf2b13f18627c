"""Whole-folder outputs: build a folder beside its destination, then swap it in.

A failure while building leaves the destination exactly as it was (no half-written manifests or
image trees); a success replaces it whole, so no stale file from an earlier run survives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from metafgnet.data.errors import DataError, short_list
from metafgnet.io import atomic_path


@contextlib.contextmanager
def staged_dir(dest: str | Path, owned: set[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest``; on success it becomes ``dest``
    (:func:`metafgnet.io.atomic_path`).

    ``owned`` names the entries this step writes: an existing ``dest`` holding anything else is
    not ours to delete, so it is refused with a :class:`DataError` before any work is done.
    """
    dest = Path(dest)
    if dest.is_file():
        raise DataError(
            f"output {dest} is a file, expected a folder (or a path that does not exist)"
        )
    if dest.is_dir():
        foreign = sorted(p.name for p in dest.iterdir() if p.name not in owned)
        if foreign:
            raise DataError(
                f"refusing to replace {dest}: it holds {short_list(foreign)}, which this step "
                f"does not write (it writes {', '.join(sorted(owned))}); choose a new or empty "
                "folder"
            )
    with atomic_path(dest, folder=True) as tmp:
        yield tmp
