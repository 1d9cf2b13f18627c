"""Safe on a shared machine and with shared artifacts: the private runtime folder is private or
refused; a model file or checkpoint cannot run code when it is loaded."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from metafgnet.io import UnsafeRuntimeDir, user_runtime_dir

OTHER_UID = 65534  # "nobody": an unprivileged account present on Debian and most Linux systems


@pytest.fixture
def runtime_base(monkeypatch):
    """``XDG_RUNTIME_DIR`` at a fresh sticky, world-writable folder (like /tmp), so that a
    process of another user can create things in it."""
    base = Path(tempfile.mkdtemp(prefix="metafgnet-sec-", dir="/tmp"))
    base.chmod(0o1777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=True)


def _as_other_user(*command: str) -> None:
    """Run ``command`` as uid 65534 (needs root to switch users; skipped otherwise)."""
    if os.getuid() != 0:
        pytest.skip("switching to a second user needs root (run the tests as root to cover it)")
    subprocess.run(command, check=True, user=OTHER_UID, group=OTHER_UID,
                   env={"PATH": "/usr/bin:/bin"}, cwd="/", timeout=60)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_folder_is_created_private(runtime_base):
    old = os.umask(0o022)
    try:
        folder = user_runtime_dir()
    finally:
        os.umask(old)
    assert folder == runtime_base / f"metafgnet-{os.getuid()}"
    assert _mode(folder) == 0o700 and folder.stat().st_uid == os.getuid()
    assert user_runtime_dir() == folder  # an existing private folder is used again


def test_a_folder_open_to_others_is_refused_not_repaired(runtime_base):
    folder = runtime_base / f"metafgnet-{os.getuid()}"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(UnsafeRuntimeDir) as info:
        user_runtime_dir()
    message = str(info.value)
    assert str(folder) in message and "0777" in message and "rm -r" in message
    assert _mode(folder) == 0o777  # never chmod-ed silently


def test_a_folder_made_by_another_user_is_refused(runtime_base):
    folder = runtime_base / f"metafgnet-{os.getuid()}"
    # the finding of the issue: another user creates the folder first, wide open
    _as_other_user("mkdir", "-m", "777", str(folder))
    assert folder.stat().st_uid == OTHER_UID
    with pytest.raises(UnsafeRuntimeDir, match=f"owned by uid {OTHER_UID}"):
        user_runtime_dir()


def test_another_users_private_folder_is_refused_too(runtime_base):
    folder = runtime_base / f"metafgnet-{os.getuid()}"
    _as_other_user("mkdir", "-m", "700", str(folder))
    with pytest.raises(UnsafeRuntimeDir, match=f"owned by uid {OTHER_UID}"):
        user_runtime_dir()


def test_a_link_in_its_place_is_refused(runtime_base, tmp_path):
    (runtime_base / f"metafgnet-{os.getuid()}").symlink_to(tmp_path)
    with pytest.raises(UnsafeRuntimeDir, match="not a folder"):
        user_runtime_dir()
