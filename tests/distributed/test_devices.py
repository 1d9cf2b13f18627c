"""GPU leases on fake device lists: each holder gets its own devices, a set is taken whole or not
at all, a waiter gets a device when its holder exits, and a holder killed with SIGKILL gives its
devices back (the kernel drops its locks). Holders are real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from metafgnet.distributed.devices import lease_devices

FOUR = ["0", "1", "2", "3"]
HOLDER = textwrap.dedent("""
    import sys, time
    from metafgnet.distributed.devices import lease_devices
    lease = lease_devices(int(sys.argv[1]), sys.argv[2].split(","), poll_s=0.1)
    print(",".join(lease.devices), flush=True)
    time.sleep(600)
""")


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    """A private user runtime folder of this test's own (the leases live in it)."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def _holder(count: int, devices: list[str]) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(count), ",".join(devices)],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    line = proc.stdout.readline().strip()
    assert line, f"holder exited ({proc.wait()}) without a lease"
    return proc, line.split(",")


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_holders_get_disjoint_sets_and_a_killed_holder_gives_its_devices_back(runtime_dir):
    first, a = _holder(2, FOUR)
    second, b = _holder(2, FOUR)
    try:
        assert len(a) == len(b) == 2 and not set(a) & set(b) and set(a) | set(b) == set(FOUR)
        with pytest.raises(RuntimeError, match="no 1 free GPU"):
            lease_devices(1, FOUR, timeout_s=0.3, poll_s=0.1)
        os.kill(first.pid, signal.SIGKILL)   # a crash: nothing runs to release the lease
        first.wait()
        lease = lease_devices(2, FOUR, timeout_s=10, poll_s=0.1)
        assert sorted(lease.devices) == sorted(a)
        assert lease.positions == tuple(FOUR.index(d) for d in lease.devices)
        lease.release()
    finally:
        _stop(first, second)


def test_a_set_is_taken_whole_or_not_at_all(runtime_dir):
    holder, held = _holder(3, FOUR)
    try:
        with pytest.raises(RuntimeError, match="no 2 free GPU"):
            lease_devices(2, FOUR, timeout_s=0.3, poll_s=0.1)
        # the failed attempt kept nothing: the one free device is still free for someone else
        (free,) = set(FOUR) - set(held)
        lease = lease_devices(1, FOUR, timeout_s=1, poll_s=0.1)
        assert lease.devices == (free,)
        lease.release()
    finally:
        _stop(holder)


def test_on_one_gpu_the_second_point_waits_for_the_first(runtime_dir):
    holder, held = _holder(1, ["0"])
    told = []
    try:
        waiter = subprocess.Popen([sys.executable, "-c", HOLDER, "1", "0"],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiter.poll() is None   # still waiting, not sharing the GPU
        holder.terminate()             # the first point ends
        holder.wait()
        assert waiter.stdout.readline().strip() == "0"
        with pytest.raises(RuntimeError, match="no 1 free GPU"):
            lease_devices(1, ["0"], timeout_s=0.2, poll_s=0.1, say=told.append)
        assert told and "leased by other" in told[0]
    finally:
        _stop(holder, waiter)


def test_more_devices_asked_than_exist_is_an_error_naming_the_setting(runtime_dir):
    with pytest.raises(RuntimeError, match=r"3 GPU\(s\) needed \(runtime.nproc\).*only 2"):
        lease_devices(3, ["0", "1"])


def test_visible_devices_follow_cuda_visible_devices(monkeypatch):
    from metafgnet.distributed.devices import visible_devices

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, GPU-abc,3")
    assert visible_devices() == ["2", "GPU-abc", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_devices() == []


RANK_SCRIPT = textwrap.dedent("""
    import os, sys
    from metafgnet.distributed import relaunch_under_torchrun
    from metafgnet.distributed.devices import _lock_path
    from metafgnet.io import hold_lock
    relaunch_under_torchrun(2, gpus=True)
    held = [hold_lock(_lock_path(d), blocking=False) is None
            for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",")]
    print(os.environ["RANK"], os.environ["CUDA_VISIBLE_DEVICES"], all(held), flush=True)
""")


@pytest.mark.slow
def test_ranks_of_a_relaunched_stage_see_only_their_leased_devices(runtime_dir, tmp_path):
    """``runtime.nproc = 2`` on four fake GPUs with one leased elsewhere: the torchrun ranks see
    the two leased devices, and the launcher still holds them while the ranks run."""
    script = tmp_path / "stage.py"
    script.write_text(RANK_SCRIPT)
    holder, held = _holder(1, FOUR)
    try:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(FOUR), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        lines = sorted(line.split() for line in out.stdout.splitlines() if line.strip())
        assert [rank for rank, _, _ in lines] == ["0", "1"]
        (visible,) = {v for _, v, _ in lines}
        assert len(visible.split(",")) == 2 and held[0] not in visible.split(",")
        assert all(h == "True" for _, _, h in lines)   # the launcher holds the lease
    finally:
        _stop(holder)
