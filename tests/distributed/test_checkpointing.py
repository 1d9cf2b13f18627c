"""Checkpoints and resume: real SIGKILL / SIGTERM of a training process, corrupt files,
fingerprints, and every loop ending BIT-IDENTICAL to an uninterrupted run (CPU, one thread).
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from distributed._helpers import bn_model, states_equal, strip_timing, worker_env
from distributed.ckpt_worker import ITERATIONS, META, run
from distributed.settings import SEED, datasets
from metafgnet.params import JointParams, MetaParams, OptimParams
from metafgnet.training import (
    CheckpointWarning,
    LoopRuntime,
    finetune,
    joint_train,
    meta_train,
    pretrain,
)
from metafgnet.training.batches import BatchStream
from metafgnet.training.checkpointing import Checkpointer, checkpoint_steps, paths_for

WORKER = Path(__file__).with_name("ckpt_worker.py")
pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


class Crash(Exception):
    """Stands for a process dying: raised from ``on_step`` before the step's checkpoint."""


@pytest.fixture(scope="module")
def uninterrupted():
    torch.set_num_threads(1)
    model, rows = run(None, 0)
    return model.state_dict(), rows


def _assert_same_run(got_state, got_rows, want):
    assert states_equal(got_state, want[0]) == []  # every tensor bit-identical
    assert strip_timing(got_rows) == strip_timing(want[1])


def _crash_at(step):
    def on_step(s, row):
        if s == step:
            raise Crash

    return on_step


def _worker(ckpt: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(ckpt), str(out), *extra],
                            env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(predicate, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"worker ended early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the worker")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun_is_bit_identical(tmp_path, uninterrupted):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.pt"
    proc = _worker(ckpt, out, "--every", "2", "--sleep", "0.2")
    # a complete checkpoint = payload + sidecar; the kill may still land mid-write of a later
    # one, which the rerun must then skip (it falls back to the previous, complete one)
    _wait_for(lambda: any(paths_for(ckpt, s)[1].exists() and s >= 4
                          for s in checkpoint_steps(ckpt)), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    assert checkpoint_steps(ckpt)[0] < ITERATIONS
    rerun = _worker(ckpt, out, "--every", "2")
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    steps = [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("step ")]
    assert steps and steps[0] >= 4  # it resumed, it did not start over
    result = torch.load(out, weights_only=False)
    _assert_same_run(result["state"], result["rows"], uninterrupted)
    assert len(checkpoint_steps(ckpt)) == 2  # the last two are kept


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_143_then_resume_is_exact(tmp_path, uninterrupted):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.pt"
    proc = _worker(ckpt, out, "--every", "0", "--sleep", "0.2")  # no periodic checkpoints
    line = ""
    while not line.startswith("step 2"):
        line = proc.stdout.readline()
        assert line or proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "received SIGTERM" in stderr
    assert "training stopped by SIGTERM after" in stderr and "rerun the same command" in stderr
    (stopped,) = checkpoint_steps(ckpt)
    assert 3 <= stopped < ITERATIONS and str(paths_for(ckpt, stopped)[0]) in stderr
    model, rows = run(ckpt, 0)  # resume in this process: same thread count, same bits
    _assert_same_run(model.state_dict(), rows, uninterrupted)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "no_sidecar"])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, uninterrupted, damage):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Crash):
        run(ckpt, 2, on_step=_crash_at(5))  # checkpoints after 2 and 4 steps, then "dies"
    assert checkpoint_steps(ckpt) == [4, 2]
    payload, sidecar = paths_for(ckpt, 4)
    data = payload.read_bytes()
    if damage == "truncate":
        payload.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        payload.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        sidecar.unlink()
    with pytest.warns(CheckpointWarning, match=r"ckpt-000000004\.pt") as caught:
        model, rows = run(ckpt, 2)
    assert {"truncate": "truncated", "flip_byte": "SHA-256", "no_sidecar": "no sidecar"}[damage] \
        in str(caught[0].message)
    _assert_same_run(model.state_dict(), rows, uninterrupted)


def test_a_checkpoint_of_another_configuration_is_set_aside_not_resumed(tmp_path):
    ckpt = tmp_path / "ckpt"
    tds, ads, _ = datasets()
    meta = MetaParams(**{**META, "iterations": 4, "milestones": [2]})
    meta_train(bn_model(), tds, ads, meta,
               LoopRuntime(device=CPU, seed=SEED, checkpoint_dir=ckpt, checkpoint_every=2))
    other = MetaParams(**{**META, "iterations": 4, "milestones": [2], "inner_lr": 0.05})
    fresh = bn_model()
    with pytest.warns(CheckpointWarning, match=r"meta\.inner_lr: checkpoint 0\.1, now 0\.05.*"
                                               r"moved to .*ckpt\.set-aside-.*starts fresh"):
        rows = meta_train(fresh, tds, ads, other, LoopRuntime(
            device=CPU, seed=SEED, checkpoint_dir=ckpt, checkpoint_every=2))
    # it trained from step 0, exactly as a run that never saw the old checkpoint
    clean = bn_model()
    clean_rows = meta_train(clean, tds, ads, other, LoopRuntime(device=CPU, seed=SEED))
    assert states_equal(fresh.state_dict(), clean.state_dict()) == []  # bit-identical
    assert strip_timing(rows) == strip_timing(clean_rows)
    aside = sorted(tmp_path.glob("ckpt.set-aside-*"))
    assert len(aside) == 1 and checkpoint_steps(aside[0]) == [4, 2]   # kept, not deleted
    # the other run's checkpoints are set aside in their turn (a second folder), never resumed
    with pytest.warns(CheckpointWarning, match=r"seed: checkpoint 5, now 6"):
        meta_train(bn_model(), tds, ads, other,
                   LoopRuntime(device=CPU, seed=SEED + 1, checkpoint_dir=ckpt))
    assert len(list(tmp_path.glob("ckpt.set-aside-*"))) == 2


def test_completed_run_reruns_from_its_last_checkpoint_without_training(tmp_path):
    ckpt = tmp_path / "ckpt"
    tds, ads, _ = datasets()
    meta = MetaParams(**{**META, "iterations": 4, "milestones": [2]})
    first = bn_model()
    rows = meta_train(first, tds, ads, meta,
                      LoopRuntime(device=CPU, seed=SEED, checkpoint_dir=ckpt, checkpoint_every=2))
    again = bn_model()
    calls = []
    rows_again = meta_train(again, tds, ads, meta, LoopRuntime(
        device=CPU, seed=SEED, checkpoint_dir=ckpt, checkpoint_every=2),
        on_step=lambda s, r: calls.append(s))
    assert calls == [] and rows_again == rows
    assert states_equal(again.state_dict(), first.state_dict()) == []


# ------------------------------------------------------------------ the plain loops
def _plain_runs(loop):
    tds, ads, vds = datasets()
    opt = dict(epochs=3, batch_size=4, milestones=[2])
    return {
        "pretrain": lambda m, on_epoch=None, **kw: (pretrain(
            m, ads, OptimParams(**opt), LoopRuntime(device=CPU, seed=SEED, **kw),
            on_epoch=on_epoch), None),
        "finetune": lambda m, on_epoch=None, **kw: (lambda f: (f.curves, f.best_epoch))(
            finetune(m, tds, vds, OptimParams(**opt), LoopRuntime(device=CPU, seed=SEED, **kw),
                     on_epoch=on_epoch)),
        "joint": lambda m, on_epoch=None, **kw: (lambda f: (f.curves, f.best_epoch))(
            joint_train(m, tds, ads, JointParams(**opt, aux_weight=0.5),
                        LoopRuntime(device=CPU, seed=SEED, **kw), val_ds=vds, on_epoch=on_epoch)),
    }[loop]


@pytest.mark.parametrize("loop", ["pretrain", "finetune", "joint"])
@pytest.mark.parametrize("crash_epoch,every", [(1, 3), (2, 4)])  # mid-epoch / epoch boundary
def test_plain_loops_resume_bit_identically(tmp_path, loop, crash_epoch, every):
    fit = _plain_runs(loop)
    ref = bn_model()
    ref_curves, ref_best = fit(ref)
    ckpt = tmp_path / "ckpt"

    def crash(epoch, row):
        if epoch == crash_epoch:
            raise Crash

    with pytest.raises(Crash):
        fit(bn_model(), checkpoint_dir=ckpt, checkpoint_every=every, on_epoch=crash)
    assert checkpoint_steps(ckpt)
    model = bn_model()
    curves, best = fit(model, checkpoint_dir=ckpt, checkpoint_every=every)
    assert states_equal(model.state_dict(), ref.state_dict()) == []
    assert strip_timing(curves) == strip_timing(ref_curves) and best == ref_best


# ------------------------------------------------------------------ data order, files
class Augmented(Dataset):
    """Items drawn from torch's, NumPy's and Python's global RNGs (like random transforms)."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        import random

        import numpy as np

        return torch.rand(2) + float(np.random.rand()) + random.random(), i


def _batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_data_order_and_augmentation_are_a_function_of_seed_and_position():
    stream = BatchStream(Augmented(), 4, seed=3)  # 2 batches per epoch
    whole = _batches(stream.loader(0, None), 6)  # three epochs
    resumed = _batches(stream.loader(3, None), 3)  # start mid-epoch 1
    for a, b in zip(whole[3:], resumed, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with_workers = BatchStream(Augmented(), 4, seed=3, loader_kwargs={"num_workers": 2})
    for a, b in zip(whole, _batches(with_workers.loader(0, None), 6), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    epochs = [sorted(torch.cat([b[1] for b in whole[2 * e:2 * e + 2]]).tolist())
              for e in range(3)]
    assert all(len(set(e)) == 8 for e in epochs)  # drop_last: 8 of 10 per epoch, no repeats
    assert whole[0][1].tolist() != whole[2][1].tolist()  # reshuffled
    state = torch.random.get_rng_state()
    _batches(stream.loader(0, None), 2)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone


def test_checkpoint_files_are_atomic_and_pruned(tmp_path):
    ckpt = Checkpointer(tmp_path, every=1, config={"a": 1})
    model = torch.nn.Linear(2, 2)
    for step in range(1, 5):
        ckpt.save(step, {"model": copy.deepcopy(model.state_dict())})
    assert checkpoint_steps(tmp_path) == [4, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-000000003.json", "ckpt-000000003.pt", "ckpt-000000004.json", "ckpt-000000004.pt"]
    assert ckpt.restore()["step"] == 4
    assert Checkpointer(None, every=1, config={}).restore() is None


def test_no_checkpoint_dir_leaves_sigterm_alone(tmp_path):
    """Without somewhere to save, SIGTERM keeps its immediate effect; with a directory the
    loop's handler is installed for the run and the previous handler restored after."""
    tds, ads, _ = datasets()
    before = signal.getsignal(signal.SIGTERM)
    meta = MetaParams(**{**META, "iterations": 1, "milestones": []})
    seen = []
    for ckpt in (None, tmp_path / "ckpt"):
        meta_train(bn_model(), tds, ads, meta,
                   LoopRuntime(device=CPU, seed=SEED, checkpoint_dir=ckpt),
                   on_step=lambda s, r: seen.append(signal.getsignal(signal.SIGTERM)))
    assert seen[0] == before and seen[1] != before
    assert signal.getsignal(signal.SIGTERM) == before
