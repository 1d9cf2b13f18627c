"""Several nodes on this machine: two torchrun agents (``--nnodes 2``, one process each) meeting
at one c10d rendezvous on 127.0.0.1, started with the per-node command the launcher builds,
meta-train exactly as one agent of two processes does (bit-identical on CPU); so does the Slurm
launcher inside an allocation of a real one-node Slurm started by the test; the launcher's
command lines and its refusals."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from distributed._helpers import ROOT, free_port, states_equal, strip_timing, worker_env
from metafgnet.distributed.launch import (
    LaunchError,
    first_node,
    launch_command,
    node_command,
    rendezvous_port,
    slurm_command,
)

WORKER = Path(__file__).with_name("multinode_worker.py")
TIMEOUT_S = 300


def load_ranks(folder: Path, world: int) -> list[dict]:
    found = sorted(p.name for p in folder.glob("rank*.pt"))
    assert found == [f"rank{r}.pt" for r in range(world)], found
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(world)]


def assert_same_training(got: list[dict], want: list[dict]) -> None:
    """Every rank ends with the same weights and BatchNorm statistics, bit for bit, and the
    logged rows (losses, accuracies, norms, learning rates) are equal."""
    for rank, (g, w) in enumerate(zip(got, want, strict=True)):
        assert not states_equal(g["state"], w["state"]), (rank, states_equal(g["state"],
                                                                             w["state"]))
        assert strip_timing(g["rows"]) == strip_timing(w["rows"]), rank
    assert not states_equal(got[0]["state"], got[1]["state"])  # the ranks agree


@pytest.fixture(scope="module")
def one_node_two_processes(tmp_path_factory) -> list[dict]:
    """The reference: a plain start of the stage-like script with ``runtime.nproc: 2``, which
    re-executes itself under one standalone torchrun agent."""
    out = tmp_path_factory.mktemp("one-node")
    proc = subprocess.run([sys.executable, str(WORKER), str(out), "2", "1", "torchrun"],
                          env=worker_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_ranks(out, 2)


@pytest.mark.slow
def test_two_nodes_of_one_process_train_bit_identically_to_one_node_of_two(
        one_node_two_processes, tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    job = uuid.uuid4().hex[:8]
    argv = [str(WORKER), str(tmp_path), "1", "2", "torchrun"]
    # the command a person runs on every node (docs/scale.md), here twice on one machine
    cmd = node_command(argv, nproc=1, nnodes=2, endpoint=endpoint, rdzv_id=job)
    logs = [open(tmp_path / f"node{i}.log", "w") for i in range(2)]  # noqa: SIM115
    agents = [subprocess.Popen(cmd, env=worker_env(), stdout=log, stderr=subprocess.STDOUT,
                               cwd=ROOT) for log in logs]
    try:
        for agent in agents:
            agent.wait(timeout=TIMEOUT_S)
    finally:
        for agent, log in zip(agents, logs, strict=True):
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            log.close()
    assert [a.returncode for a in agents] == [0, 0], [
        (tmp_path / f"node{i}.log").read_text()[-3000:] for i in range(2)]
    two_nodes = load_ranks(tmp_path, 2)
    places = [r["place"] for r in two_nodes]
    # one process per agent, the agents are nodes 0 and 1 of one world of two
    assert sorted(p["GROUP_RANK"] for p in places) == ["0", "1"], places
    assert all(p["LOCAL_WORLD_SIZE"] == "1" and p["LOCAL_RANK"] == "0"
               and p["WORLD_SIZE"] == "2" for p in places), places
    assert [p["LOCAL_WORLD_SIZE"] for p in (r["place"] for r in one_node_two_processes)] == [
        "2", "2"]
    assert_same_training(two_nodes, one_node_two_processes)


def test_a_node_count_that_differs_from_the_params_is_refused(monkeypatch):
    from metafgnet.distributed import init_distributed
    from metafgnet.params import RuntimeParams

    env = {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RuntimeError, match=r"runtime\.nnodes x runtime\.nproc is 1 x 2 but "
                                           r"torchrun started 4 .* set runtime\.nnodes to 2"):
        init_distributed(RuntimeParams(nproc=2, nnodes=1))


SLURM_ENV = {"SLURM_JOB_ID": "123457", "SLURM_JOB_NODELIST": "gpu[07-08]",
             "SLURM_JOB_NUM_NODES": "2"}


def test_slurm_command_starts_one_agent_per_node_meeting_on_the_first_node():
    cmd = slurm_command(["pipeline/meta_train.py", "--out", "m"], nproc=4, nnodes=2,
                        env=SLURM_ENV, python="py")
    assert cmd == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                   "--kill-on-bad-exit=1", "py", "-m", "metafgnet.distributed.run",
                   "--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d",
                   f"--rdzv_endpoint=gpu07:{rendezvous_port('123457')}",
                   "--rdzv_id=slurm-123457", "pipeline/meta_train.py", "--out", "m"]
    assert rendezvous_port("123457") == 20000 + 123457 % 20000
    assert [first_node(s) for s in ("vm", "a1,a2", "n[7]", "gpu[003-005,9],cpu1")] == [
        "vm", "a1", "n7", "gpu003"]


def test_launcher_refusals_say_what_to_do():
    with pytest.raises(LaunchError, match=r"not a Slurm job \(SLURM_JOB_ID is unset\).*salloc -N 2"):
        slurm_command(["s.py"], nproc=1, nnodes=2, env={})
    with pytest.raises(LaunchError, match=r"runtime\.nnodes is 3 but Slurm job 123457 has 2 "
                                          r"node\(s\).*set runtime\.nnodes: 2"):
        slurm_command(["s.py"], nproc=1, nnodes=3, env=SLURM_ENV)
    with pytest.raises(LaunchError) as err:
        launch_command(2, ["pipeline/meta_train.py", "--out", "m"], nnodes=2)
    assert ("python -m metafgnet.distributed.run --nnodes=2 --nproc_per_node=2 "
            "--rdzv_backend=c10d '--rdzv_endpoint=<head node>:29500' '--rdzv_id=<job id>' "
            "pipeline/meta_train.py --out m") in str(err.value)
    assert launch_command(1, ["s.py"]) is None and launch_command(1, ["s.py"], launcher="slurm",
                                                                  env={}) is None
    assert launch_command(2, ["s.py"], python="py")[:4] == [
        "py", "-m", "metafgnet.distributed.run", "--standalone"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm cluster started for these tests (support.slurm); skips with the reason
    where Slurm is not installed or does not come up within a minute."""
    from support import slurm as one_node

    reason = one_node.unavailable()
    if reason:
        pytest.skip(reason)
    root = Path(f"/tmp/metafgnet-slurm-{uuid.uuid4().hex[:8]}")  # short: Slurm's socket paths
    with contextlib.ExitStack() as stack:
        try:
            env = stack.enter_context(one_node.cluster(root))
        except RuntimeError as exc:
            pytest.skip(f"Slurm did not start: {str(exc)[:2000]}")
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        yield env


@pytest.mark.slow
def test_slurm_launcher_runs_the_stage_through_srun_like_torchrun(
        slurm, one_node_two_processes, tmp_path):
    """``execution.launcher: slurm`` inside an allocation (``salloc -N 1``, as ``dvc repro``
    on the head node would be): the plain start re-executes as ``srun`` starting one torchrun
    agent, whose two processes train exactly as the standalone agent's."""
    env = {**worker_env(), **{k: v for k, v in slurm.items() if k == "SLURM_CONF"}}
    proc = subprocess.run([shutil.which("salloc") or "salloc", "--nodes=1", "--quiet",
                           sys.executable, str(WORKER), str(tmp_path), "2", "1", "slurm"],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ranks = load_ranks(tmp_path, 2)
    places = [r["place"] for r in ranks]
    # started by srun (one task: step 0, task 0 of the job), then by its torchrun agent
    assert all(p["SLURM_JOB_ID"] and p["SLURM_STEP_ID"] == "0" and p["SLURM_PROCID"] == "0"
               for p in places), places
    assert sorted(p["LOCAL_RANK"] for p in places) == ["0", "1"], places
    assert_same_training(ranks, one_node_two_processes)


STAGE = '''
from metafgnet.stages.context import open_stage

with open_stage("probe", ["runtime"]):
    raise SystemExit("the stage body must not run")
'''


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "slurm"])
def test_a_stage_asking_for_two_nodes_outside_a_job_stops_with_what_to_run(tmp_path, launcher):
    """A stage reads ``runtime.nnodes`` and ``execution.launcher`` from its params: started
    plainly without a scheduler it prints the per-node command; with ``launcher: slurm`` outside
    an allocation it names ``salloc``. One block, no traceback, exit 2, before any work."""
    (tmp_path / "params.yaml").write_text(
        f"runtime: {{nnodes: 2}}\nexecution: {{launcher: {launcher}}}\n"
        "tracking: {enabled: false}\n")
    (tmp_path / "stage.py").write_text(STAGE)
    env = {k: v for k, v in worker_env().items() if not k.startswith("SLURM_")}
    proc = subprocess.run([sys.executable, "stage.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    err = proc.stderr
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err and "must not run" not in err, err
    if launcher == "torchrun":
        assert ("start the stage on every node with `python -m metafgnet.distributed.run "
                "--nnodes=2 --nproc_per_node=1 --rdzv_backend=c10d") in err, err
        assert "stage.py`" in err and "then `dvc commit` on the head node" in err, err
    else:
        assert "execution.launcher is slurm but this is not a Slurm job" in err, err
        assert "salloc -N 2" in err, err
