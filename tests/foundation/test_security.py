"""Safe on a shared machine and with shared artifacts: the private runtime folder is private or
refused; a model file or checkpoint cannot run code when it is loaded."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

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


# -- model files and checkpoints ---------------------------------------------------------------


class _Payload:
    """Unpickling this creates the folder ``marker``: the code a crafted file would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def tiny_model():
    from metafgnet.models.metafgnet import build_model
    from metafgnet.params import ModelParams

    arch = {"backbone": "small_resnet", "pretrained": "none"}
    return build_model(ModelParams(**arch), 3, 5), arch


def test_a_model_file_loads_its_weights(tmp_path, tiny_model):
    from metafgnet.models.files import load_model, save_model

    model, arch = tiny_model
    save_model(tmp_path / "model.pt", model, arch, {"seed": 1, "data": {"x": [1, 2]}}, "finetune",
               metrics={"val_top1": 0.5})
    loaded, payload = load_model(tmp_path / "model.pt")
    assert payload["metrics"] == {"val_top1": 0.5} and payload["params"]["data"]["x"] == [1, 2]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_a_crafted_model_file_is_refused_before_its_code_runs(tmp_path, tiny_model):
    from metafgnet.models.files import load_model, save_model

    model, arch = tiny_model
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    save_model(path, model, arch, {"seed": 1}, "finetune", metrics=_Payload(marker))
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused, not loaded") as info:
        load_model(path)
    assert str(path) in str(info.value) and "posix.mkdir" in str(info.value)
    assert not marker.exists()  # nothing of the file ran


def _checkpointer(tmp_path):
    from metafgnet.training.checkpointing import Checkpointer

    return Checkpointer(tmp_path / "ckpt", every=1, config={"lr": 0.1})


def test_a_checkpoint_restores_every_rng_state(tmp_path):
    import random

    import numpy as np

    from metafgnet.training.checkpointing import rng_state, set_rng_state

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # a cached Gaussian is part of NumPy's state
    ckpt = _checkpointer(tmp_path)
    ckpt.save(4, {"rng": rng_state(), "curves": [{"loss": 1.5}]})
    expected = (random.random(), np.random.standard_normal(2).tolist(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    payload = ckpt.restore()
    assert payload["step"] == 4 and payload["curves"] == [{"loss": 1.5}]
    set_rng_state(payload["rng"])
    again = (random.random(), np.random.standard_normal(2).tolist(), torch.rand(2))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])


def test_a_crafted_checkpoint_is_refused_before_its_code_runs(tmp_path):
    from metafgnet.training.checkpointing import CheckpointWarning, paths_for, read_verified

    marker = tmp_path / "marker"
    ckpt = _checkpointer(tmp_path)
    ckpt.save(1, {"note": "good"})
    path = ckpt.save(2, {"note": _Payload(marker)})  # the sidecar matches: only the load guards
    with pytest.raises(ValueError, match="refused") as info:
        read_verified(tmp_path / "ckpt", 2)
    assert str(path) in str(info.value)
    with pytest.warns(CheckpointWarning, match=f"{paths_for(tmp_path / 'ckpt', 2)[0]}: refused"):
        payload = ckpt.restore()
    assert payload["note"] == "good"  # the previous, safe checkpoint is used
    assert not marker.exists()
