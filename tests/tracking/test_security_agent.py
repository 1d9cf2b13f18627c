"""The tracking agent's socket is authenticated both ways before anything is unpickled: a
process that is not this user's agent (or stage), or does not hold the user's agent key, is
refused, and a pickled payload it sends is never loaded (the payload would create a marker)."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from metafgnet.tracking import agent as agent_mod
from metafgnet.tracking.agent import AgentAuthError, RemoteRecorder, agent_key, socket_path

OTHER_UID = 65534  # "nobody"


class _Payload:
    """Unpickling this creates the folder ``marker`` (what an attacker's code would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


def _forger(path: Path, first_message: bytes, proof: bytes | None = None) -> threading.Thread:
    """A listener at ``path`` that sends ``first_message`` to whoever connects, then (if given)
    reads one message and answers ``proof``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve():
        sock, _ = server.accept()
        conn = Connection(sock.detach())
        conn.send_bytes(first_message)
        if proof is not None:
            conn.recv_bytes()
            conn.send_bytes(proof)
        with contextlib.suppress(EOFError, OSError):
            conn.recv_bytes()  # until the stage hangs up
        conn.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_the_key_is_private_and_made_once(runtime):
    key = agent_key()
    path = runtime / "run" / f"metafgnet-{os.getuid()}" / "agent.key"
    assert len(key) == 32 and agent_key() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(AgentAuthError, match=rf"{path} has mode 0644"):
        agent_key()


@pytest.mark.parametrize("forgery", ["payload_first", "hello_without_key"])
def test_a_stage_refuses_a_listener_without_the_key(runtime, forgery):
    uri, execution = f"sqlite:///{runtime / 'mlflow.db'}", uuid.uuid4().hex
    marker = runtime / "marker"
    payload = pickle.dumps(("ok", _Payload(marker)))
    path = socket_path(uri, execution)
    if forgery == "payload_first":  # answers with a pickle at once
        thread = _forger(path, payload)
    else:  # speaks the protocol, cannot prove the key, then sends its pickle as the proof
        thread = _forger(path, agent_mod.HELLO + os.urandom(32), proof=payload)
    with pytest.raises(AgentAuthError) as info:
        RemoteRecorder(uri, execution)
    thread.join(10)
    assert f"refusing the tracking agent socket {path}" in str(info.value)
    assert "Nothing was read from it" in str(info.value)
    assert not marker.exists()  # nothing was unpickled


def test_a_stage_refuses_a_listener_of_another_user(tmp_path):
    if os.getuid() != 0 or not Path("/usr/bin/python3").is_file():
        pytest.skip("needs root (to run a listener as a second user) and /usr/bin/python3")
    shared = Path(tempfile.mkdtemp(prefix="metafgnet-sec-", dir="/tmp"))
    shared.chmod(0o1777)  # a folder both users can write, as a shared runtime folder was
    path, marker = shared / "agent.sock", tmp_path / "marker"
    payload = pickle.dumps(("ok", _Payload(marker)))
    code = ("import socket, struct, sys, time\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)\n"
            "print('ready', flush=True)\n"
            "c, _ = s.accept(); data = bytes.fromhex(sys.argv[2])\n"
            "c.sendall(struct.pack('!i', len(data)) + data); time.sleep(2)\n")
    listener = subprocess.Popen(["/usr/bin/python3", "-c", code, str(path), payload.hex()],
                                user=OTHER_UID, group=OTHER_UID, cwd="/", text=True,
                                stdout=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
    try:
        assert listener.stdout.readline().strip() == "ready"
        with pytest.raises(AgentAuthError, match=f"runs as uid {OTHER_UID}, not as this user"):
            agent_mod._connect(path)
    finally:
        listener.kill()
        listener.wait()
        shutil.rmtree(shared)
    assert not marker.exists()


@pytest.fixture
def live_agent(runtime):
    """The agent's own accept loop (``_Agent.run``) in a thread, on a socket of the private
    folder; it exits by itself once idle."""
    path = socket_path(f"sqlite:///{runtime / 'mlflow.db'}", uuid.uuid4().hex)
    server = agent_mod._Agent(path, idle_s=2.0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield path
    thread.join(30)
    assert not thread.is_alive()


def test_the_agent_refuses_a_client_without_the_key_and_serves_its_stage(live_agent, runtime):
    marker = runtime / "marker"
    call = pickle.dumps(_Payload(marker))
    # a client that sends its pickle at once, and one that answers the hello with it
    for read_hello in (False, True):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(live_agent))
        conn = Connection(sock.detach())
        if read_hello:
            assert conn.recv_bytes().startswith(agent_mod.HELLO)
        conn.send_bytes(call)
        with pytest.raises((EOFError, ConnectionResetError)):  # dropped, no reply
            while True:
                assert not conn.recv_bytes().startswith(b"\x80")  # never a pickled reply
        conn.close()
    assert not marker.exists()

    # this user's stage, with the key, is served
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(live_agent))
    conn = agent_mod.handshake_stage(sock, agent_key())
    sock.close()
    conn.send_bytes(pickle.dumps(("pid", (), {})))
    assert pickle.loads(conn.recv_bytes()) == ("ok", os.getpid())
    conn.close()


def test_a_silent_listener_cannot_hold_a_stage(runtime, monkeypatch):
    monkeypatch.setattr(agent_mod, "HANDSHAKE_STAGE_S", 0.5)
    path = socket_path(f"sqlite:///{runtime / 'mlflow.db'}", uuid.uuid4().hex)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)  # accepts (the kernel does) and never says a word
    try:
        with pytest.raises(AgentAuthError, match="did not complete the handshake within 0.5 s"):
            agent_mod._connect(path)
    finally:
        server.close()
