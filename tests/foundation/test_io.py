"""Atomic outputs get the permissions an ordinary write would give (0644 / 0755 under umask 022),
not the 0600 / 0700 of the temporary files they are written through."""

import os
import stat

import pytest

from metafgnet.data.staging import staged_dir
from metafgnet.io import write_bytes, write_json


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_and_folders_are_readable_by_others(tmp_path, umask_022):
    write_json(tmp_path / "metrics.json", {"a": 1})
    assert _mode(tmp_path / "metrics.json") == 0o644
    write_bytes(tmp_path / "ckpt" / "state.pt", b"x")
    assert _mode(tmp_path / "ckpt" / "state.pt") == 0o644
    with staged_dir(tmp_path / "prepared", owned={"index.json"}) as tmp:
        (tmp / "index.json").write_text("{}")
    assert _mode(tmp_path / "prepared") == 0o755
    assert not list(tmp_path.glob(".*.tmp"))   # no temporary left behind


def test_the_umask_still_decides(tmp_path):
    old = os.umask(0o077)
    try:
        write_json(tmp_path / "private.json", {})
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private.json") == 0o600


def test_file_lock_excludes_and_never_truncates(tmp_path):
    from metafgnet.io import file_lock

    path = tmp_path / "new" / "dir" / "store.db"  # parents are created
    with file_lock(path) as taken:
        assert taken is True
        with file_lock(path, blocking=False) as second:  # another open file: excluded
            assert second is False
    with file_lock(path, blocking=False) as again:  # released on exit
        assert again is True
    path.write_bytes(b"data")
    with file_lock(path):
        pass
    assert path.read_bytes() == b"data"  # a database locked as itself keeps its bytes
