"""What a stage really read and wrote, so a test can hold ``dvc.yaml`` to the truth.

When ``METAFGNET_AUDIT`` names a folder, :func:`start` installs an audit hook (PEP 578) that
records every file the stage process opens, and :func:`finish` writes them, together with the
source files of every imported ``metafgnet`` module and the params sections the stage declared,
to ``<folder>/<stage>.json``. Off by default: the hook costs nothing unless asked for.
A test holds every stage's code deps in ``dvc.yaml`` to :func:`code_deps` of its record, file by
file, so that editing one stage's code re-runs that stage and what depends on its outputs only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# Modules whose code cannot change a stage's outputs, so they are no stage's deps in
# ``dvc.yaml``: where results are logged (tracking) and what is redacted there (credentials),
# provenance tags, the preflight checks, this audit, the package's docstring.
OBSERVATIONAL = ("src/metafgnet/tracking/", "src/metafgnet/credentials.py",
                 "src/metafgnet/provenance.py", "src/metafgnet/preflight.py",
                 "src/metafgnet/stages/audit.py", "src/metafgnet/__init__.py")

_OPENED: dict[str, set[str]] = {"read": set(), "write": set()}
_ACTIVE = False


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def _hook(event: str, args: tuple) -> None:
    if not _ACTIVE:
        return
    if event == "os.rename":  # os.replace of an atomic write: the destination is written
        path, kind = args[1], "write"
    elif event == "open":
        path, mode, flags = args
        if isinstance(mode, str):  # open()/io.open
            kind = "write" if set(mode) & set("wax+") else "read"
        else:  # os.open: only flags
            kind = "write" if (flags or 0) & _WRITE_FLAGS else "read"
    else:
        return
    if isinstance(path, str | bytes | os.PathLike):  # not a file descriptor
        _OPENED[kind].add(os.path.abspath(os.fsdecode(path)))


def code_deps(modules: list[str]) -> list[str]:
    """The source files among ``modules`` (a record's ``modules``, repository-relative) that a
    stage importing them must list in its ``dvc.yaml`` deps, one by one: every ``src/`` file but
    the :data:`OBSERVATIONAL` ones."""
    return sorted(m for m in modules if m.startswith("src/") and not m.startswith(OBSERVATIONAL))


def start() -> None:
    global _ACTIVE
    if os.environ.get("METAFGNET_AUDIT") and not _ACTIVE:
        sys.addaudithook(_hook)
        _ACTIVE = True


def finish(stage: str, sections: list[str]) -> None:
    folder = os.environ.get("METAFGNET_AUDIT")
    if not folder or not _ACTIVE:
        return
    root = Path.cwd().resolve()

    def rel(paths) -> list[str]:
        out = set()
        for p in paths:
            if os.path.isdir(p):
                continue  # listing a folder (e.g. a path check) reads no content
            try:
                out.add(str(Path(p).resolve().relative_to(root)))
            except ValueError:
                continue  # outside the repository (site-packages, /tmp, /proc)
        return sorted(out)

    modules = [getattr(m, "__file__", None) for name, m in list(sys.modules.items())
               if name == "metafgnet" or name.startswith("metafgnet.")]
    record = {"stage": stage, "sections": sorted(sections), "read": rel(_OPENED["read"]),
              "write": rel(_OPENED["write"]), "modules": rel(m for m in modules if m)}
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{stage}.json").write_text(json.dumps(record, indent=1))
