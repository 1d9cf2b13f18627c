"""Atomic file outputs: every output is written whole to a temporary file and renamed in place.
Also the one exclusive file lock (:func:`file_lock`) the processes of one machine share."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from metafgnet.errors import UserError


def default_mode(path: str | Path) -> None:
    """Give a file or folder made by ``tempfile`` (0600 / 0700) the permissions an ordinary
    ``open`` or ``mkdir`` would (0644 / 0755 under the usual umask 022), before it is renamed
    into place: outputs stay readable by the group and by other users of a shared machine."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | Path, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary file (``folder``: an empty folder) beside ``path``; on success it is
    ``fsync``-ed, given :func:`default_mode` and renamed onto ``path``, then the parent folder is
    ``fsync``-ed, so after a crash ``path`` holds either the old content or the whole new one.
    A folder replaces an existing one whole (nothing of the old one survives). On an error
    ``path`` is left as it was and the temporary is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = {"prefix": f".{path.name}.", "suffix": ".tmp", "dir": path.parent}
    if folder:
        tmp_path = Path(tempfile.mkdtemp(**name))
    else:
        fd, tmp = tempfile.mkstemp(**name)
        os.close(fd)
        tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        default_mode(tmp_path)
        if folder and path.exists():
            old = tmp_path.with_name(tmp_path.name + ".old")
            os.replace(path, old)
            os.replace(tmp_path, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_path, path)
        _fsync(path.parent)
    finally:
        if folder:
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            tmp_path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk. A file is opened for writing
    (it is being written: an audit of what a stage reads must not count it)."""
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(path, os.O_RDONLY if path.is_dir() else os.O_WRONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class UnsafeRuntimeDir(UserError):
    """The per-user runtime folder exists but another user owns it or may write into it."""


def not_private(st: os.stat_result, folder: bool) -> str | None:
    """Why the folder (or regular file) whose ``lstat`` is ``st`` is not this user's alone, as
    words following its name; None when it is the right kind, owned by this user and closed to
    group and others."""
    if not (stat.S_ISDIR if folder else stat.S_ISREG)(st.st_mode):
        return "is not a folder (a link or a file)" if folder else "is not a regular file"
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return f"has mode {stat.S_IMODE(st.st_mode):04o}: group or other users may reach it"
    return None


def user_runtime_dir() -> Path:
    """This user's private folder for the files processes of one machine share (agent sockets,
    the agent's key, locks, marks): ``metafgnet-<uid>`` in ``$XDG_RUNTIME_DIR`` or the temp
    folder.

    Created atomically (one ``mkdir``) with mode ``0700`` by whichever process needs it first.
    An existing one is used only if it is a real folder (not a link) owned by this user and
    closed to group and others; anything else raises :class:`UnsafeRuntimeDir` naming the
    folder and the fix. It is never chmod-ed or reused silently: another user who made it first
    could watch or replace what is put in it.
    """
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    folder = base / f"metafgnet-{os.getuid()}"
    base.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)  # the umask can only take bits away
    if problem := not_private(os.lstat(folder), folder=True):
        raise UnsafeRuntimeDir(
            f"the private runtime folder {folder} {problem}.\n"
            "metafgnet keeps its tracking agent's socket and key there and refuses to use a "
            "folder other users can reach. Fix: check who made it and what it holds, then remove "
            f"it (`rm -r {folder}`; metafgnet recreates it 0700), or point XDG_RUNTIME_DIR at a "
            "folder of your own.")
    return folder


@contextlib.contextmanager
def file_lock(path: str | Path, blocking: bool = True) -> Iterator[bool]:
    """Exclusive ``flock`` on ``path`` for the ``with`` block; yields whether it was taken.

    Blocking (the default) waits and always yields True; ``blocking=False`` yields False at
    once when another process holds the lock. Parent folders are created. The file is opened
    for appending, so an existing file (a lock file, or a database locked as itself) is never
    truncated and a new one stays empty. ``flock`` is independent of the POSIX record locks
    sqlite uses. The file is left in place: removing it would let two processes lock two
    different files under one name.
    """
    handle = hold_lock(path, blocking)
    if handle is None:
        yield False
        return
    with handle:
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def hold_lock(path: str | Path, blocking: bool = True) -> BinaryIO | None:
    """The lock of :func:`file_lock` held by an open file: returns the file (closing it, or
    the process ending however it ends, releases the lock), or None when ``blocking=False``
    and another process holds it. For locks that outlive a ``with`` block (device leases)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "ab+")  # noqa: SIM115 (returned to the caller, who closes it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.close()
        return None
    except BaseException:
        handle.close()
        raise
    return handle


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_tsv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts with the same keys) as a tab-separated table with a header."""
    if not rows:
        write_text(path, "")
        return
    keys = list(rows[0])
    lines = ["\t".join(keys)]
    lines += ["\t".join(_fmt(row.get(k)) for k in keys) for row in rows]
    write_text(path, "\n".join(lines) + "\n")


class TsvAppender:
    """A tab-separated table written one row at a time, each row on disk when
    :meth:`append` returns (a live training curve that ``dvc plots show`` and editors watching
    DVC plots read while the stage runs). The first row fixes the columns and truncates the
    file; the finished table is rewritten whole with :func:`write_tsv`."""

    def __init__(self, path: str | Path) -> None:
        self.path, self.keys = Path(path), None

    def append(self, row: dict[str, Any]) -> None:
        first = self.keys is None
        if first:
            self.keys = list(row)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w" if first else "a") as fh:
            if first:
                fh.write("\t".join(self.keys) + "\n")
            fh.write("\t".join(_fmt(row.get(k)) for k in self.keys) + "\n")


def csv_text(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A CSV table as text, ``\n`` line ends on every platform (so its digest is the same)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file as the params are read (:func:`parse_yaml_text`)."""
    return parse_yaml_text(Path(path).read_text())


def parse_yaml_text(text: str) -> Any:
    """Parse YAML text safely, reading ``1e-3`` as a float (YAML 1.1 would read a string)."""
    return yaml.load(text, Loader=_Loader)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
