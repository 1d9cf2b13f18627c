"""The tracking agent: one long-lived process per pipeline execution that talks to MLflow.

Importing MLflow and torch is a large fixed CPU cost, and the default pipeline's stages are
short, so paying it in every stage process is a visible share of the pipeline (measured by
``bench/pipeline.py``). With ``tracking.agent: true`` (the default) a stage never imports
MLflow: its :class:`RemoteRecorder` sends each call of a
:class:`~metafgnet.tracking.recorder.Recorder` over a Unix socket to the agent of its execution
(:mod:`metafgnet.tracking.execution`), which imports MLflow and torch once and keeps the store
open across stages.

Lifecycle:

* the first stage of an execution starts the agent (``python -m metafgnet.tracking.agent``,
  detached, its own session, ``nice`` 19, output to ``<socket>.log``), with the same interpreter
  and the same ``metafgnet`` source on its path, so queued experiments log with their own code;
* each stage process holds one connection, i.e. one stage run; a stage that dies without ending
  its run (``SIGKILL``) has it ended ``KILLED`` when its connection drops;
* the agent exits once no stage has been connected for ``METAFGNET_AGENT_IDLE_S`` seconds
  (default 60; the next stage of a ``dvc repro`` connects within seconds), deleting its
  log unless a call failed or a stage was killed.

Calls are synchronous: an error in the agent comes back as a
:class:`~metafgnet.tracking.uri.TrackingError` in the stage, and a lost agent fails the stage
at its next call, so no record is lost silently. Messages are pickled (standard ``pickle``, not
multiprocessing's reducers, which would move tensors through shared memory): models must be
instances of classes importable by module path, as for MLflow's own pickle format.

Nothing is unpickled from a peer that has not proved it belongs to this user, both ways, on
every connection (:func:`handshake_stage` / :func:`handshake_agent`):

* the socket lives in this user's private runtime folder (:func:`metafgnet.io.user_runtime_dir`:
  ``0700``, owned by the user, else refused);
* each side reads the peer's uid from the kernel (``SO_PEERCRED``) and drops a peer of another
  uid;
* then both prove they hold the user's agent key (:func:`agent_key`: 32 random bytes in
  ``agent.key`` of that folder, created ``0600`` atomically, refused if another user owns it or
  may read it) by an HMAC-SHA256 of fresh nonces of the other side; the key never travels.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import logging
import os
import pickle
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import metafgnet
from metafgnet.io import file_lock, not_private, user_runtime_dir
from metafgnet.tracking.recorder import operations
from metafgnet.tracking.uri import AgentLost, TrackingError

log = logging.getLogger(__name__)

IDLE_ENV = "METAFGNET_AGENT_IDLE_S"
DEFAULT_IDLE_S = 60.0  # > the gap between two stages, even under load (torch import and data)
START_TIMEOUT_S = 30.0
NICE = 19  # the lowest priority: bookkeeping runs on what training leaves idle
KEY_NAME = "agent.key"
KEY_BYTES = 32
NONCE_BYTES = 32
HELLO = b"metafgnet-agent-1:"  # the agent's first message: HELLO + its nonce
HANDSHAKE_STAGE_S = 120.0  # a stage waits this long for the agent's hello (it imports MLflow first)
HANDSHAKE_AGENT_S = 10.0  # the agent waits this long for a connected stage's answer
_MODELS_READY = threading.Event()  # set once model logging is warmed up (_import_model_flavor)
_TROUBLE = threading.Event()  # an error or a killed stage: the log is kept at exit


def socket_path(uri: str, execution: str) -> Path:
    """The agent socket of one execution, tracking URI and code (short: AF_UNIX limit)."""
    code = Path(metafgnet.__file__).resolve().parent
    key = hashlib.sha1(f"{uri}\0{execution}\0{code}\0{sys.executable}".encode()).hexdigest()
    return user_runtime_dir() / f"agent-{key[:16]}.sock"


def _lock_path(sock: Path) -> Path:
    """``<socket>.lock``, held exclusively while an agent starts and while one decides to exit:
    the two exclude each other, so a stage never connects to an agent that is about to leave."""
    return sock.with_suffix(".lock")


# -- authentication ----------------------------------------------------------------------------


class AgentAuthError(TrackingError):
    """The other end of an agent socket is not a process of this user holding its agent key."""


def agent_key() -> bytes:
    """This user's agent key, created on first use (module docstring): ``agent.key`` in the
    private runtime folder, 32 random bytes, ``0600``. Created whole under a temporary name and
    linked into place, so no process ever reads a partial key; an existing file is used only if
    it is a regular file of this user closed to group and others, of the right size."""
    path = user_runtime_dir() / KEY_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        _create_key(path)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:  # ELOOP: a symbolic link
        raise AgentAuthError(f"{path}: cannot be used as the tracking agent's key ({exc}); "
                             f"remove it (metafgnet makes a new one)") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        problem = not_private(st, folder=False)
        if problem is None and st.st_size != KEY_BYTES:
            problem = f"holds {st.st_size} bytes, not {KEY_BYTES}"
        if problem:
            raise AgentAuthError(f"the tracking agent's key {path} {problem}; remove it "
                                 "(metafgnet makes a new one) after checking who wrote it")
        return fh.read()


def _create_key(path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{KEY_NAME}.", dir=path.parent)  # 0600
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _check_peer(sock: socket.socket, what: str) -> None:
    """Raise :class:`AgentAuthError` unless the peer process of ``sock`` runs as this uid."""
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if uid != os.getuid():
        raise AgentAuthError(f"the {what} on this socket runs as uid {uid}, not as this user "
                             f"(uid {os.getuid()})")


def _mac(key: bytes, role: bytes, *nonces: bytes) -> bytes:
    return hmac.new(key, role + b"\0" + b"".join(nonces), "sha256").digest()


@contextlib.contextmanager
def _receive_timeout(sock: socket.socket, seconds: float):
    """A receive timeout on the socket's descriptor (``SO_RCVTIMEO``: a blocking read then fails
    with ``EAGAIN``), so that a silent peer cannot hold the handshake for ever."""
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    struct.pack("ll", whole, int((seconds - whole) * 1e6)))
    try:
        yield
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))


def handshake_stage(sock: socket.socket, key: bytes) -> Connection:
    """The stage's side, on a connected socket: the peer must be this user's agent (uid, then
    the key). Returns the connection; raises :class:`AgentAuthError` (nothing was unpickled)."""
    _check_peer(sock, "process listening")
    conn = Connection(os.dup(sock.fileno()))
    try:
        with _receive_timeout(sock, HANDSHAKE_STAGE_S):
            hello = conn.recv_bytes(len(HELLO) + NONCE_BYTES)
            if not hello.startswith(HELLO) or len(hello) != len(HELLO) + NONCE_BYTES:
                raise AgentAuthError("the process listening on this socket does not speak the "
                                     "tracking agent's protocol")
            agent_nonce, own_nonce = hello[len(HELLO):], secrets.token_bytes(NONCE_BYTES)
            conn.send_bytes(own_nonce + _mac(key, b"stage", agent_nonce, own_nonce))
            proof = conn.recv_bytes(64)
        if not hmac.compare_digest(proof, _mac(key, b"agent", own_nonce, agent_nonce)):
            raise AgentAuthError("the process listening on this socket does not hold this "
                                 "user's agent key")
    except BaseException as exc:
        conn.close()
        if isinstance(exc, BlockingIOError):  # SO_RCVTIMEO ran out
            raise AgentAuthError(
                f"the process listening on this socket did not complete the handshake within "
                f"{HANDSHAKE_STAGE_S:g} s (a tracking agent still starting on a busy machine, "
                "or not a tracking agent)") from None
        if isinstance(exc, (EOFError, OSError)):
            raise AgentAuthError(f"the process listening on this socket dropped the handshake "
                                 f"({type(exc).__name__}: {exc}): it does not hold this user's "
                                 "agent key") from None
        raise
    return conn


def handshake_agent(sock: socket.socket, key: bytes) -> Connection:
    """The agent's side, on an accepted socket: the peer must be a stage of this user (uid,
    then the key). Returns the connection; raises :class:`AgentAuthError` (nothing unpickled)."""
    _check_peer(sock, "connected process")
    with _receive_timeout(sock, HANDSHAKE_AGENT_S):
        conn = Connection(os.dup(sock.fileno()))
        own_nonce = secrets.token_bytes(NONCE_BYTES)
        try:
            conn.send_bytes(HELLO + own_nonce)
            answer = conn.recv_bytes(2 * NONCE_BYTES)
        except (EOFError, OSError) as exc:
            conn.close()
            raise AgentAuthError(f"a connected process did not complete the handshake "
                                 f"({type(exc).__name__}: {exc})") from None
        stage_nonce, mac = answer[:NONCE_BYTES], answer[NONCE_BYTES:]
        if len(answer) != 2 * NONCE_BYTES or not hmac.compare_digest(
                mac, _mac(key, b"stage", own_nonce, stage_nonce)):
            conn.close()
            raise AgentAuthError("a connected process does not hold this user's agent key")
        conn.send_bytes(_mac(key, b"agent", stage_nonce, own_nonce))
    return conn


# -- stage side --------------------------------------------------------------------------------


def _connect(path: Path) -> Connection:
    """A connection to the agent listening on ``path``, authenticated (module docstring).

    ``OSError``: nothing listens there. :class:`AgentAuthError` (a :class:`TrackingError`):
    something does, but not this user's agent; the stage stops rather than talk to it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return handshake_stage(sock, agent_key())
    except AgentAuthError as exc:
        raise AgentAuthError(
            f"refusing the tracking agent socket {path}: {exc}. Nothing was read from it. If "
            "no agent of yours is running, remove the socket and run the stage again; set "
            "`tracking.agent: false` to record from the stage process itself.") from None
    finally:
        sock.close()


_SPAWNED: list[subprocess.Popen] = []  # kept so Python does not warn about a running child


def _spawn(path: Path) -> subprocess.Popen:
    code_root = str(Path(metafgnet.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [code_root, os.environ.get("PYTHONPATH")]))}
    with open(path.with_suffix(".log"), "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "metafgnet.tracking.agent", "--socket", str(path)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=path.parent, start_new_session=True,  # no inherited pipe: DVC never waits on it
        )
    _SPAWNED.append(proc)
    return proc


def connect_agent(uri: str, execution: str) -> tuple[Connection, Path]:
    """A connection to the execution's agent, started if none answers."""
    path = socket_path(uri, execution)
    with file_lock(_lock_path(path)):
        with contextlib.suppress(OSError):
            return _connect(path), path
        path.unlink(missing_ok=True)  # left by an agent that died
        proc = _spawn(path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError):
                return _connect(path), path
            if proc.poll() is not None or time.monotonic() > deadline:
                state = (f"exited with status {proc.returncode}" if proc.poll() is not None
                         else f"did not listen within {START_TIMEOUT_S:g} s")
                raise TrackingError(
                    f"the tracking agent {state}; its log is {path.with_suffix('.log')} "
                    "(set `tracking.agent: false` to record from the stage process itself)")
            time.sleep(0.02)


class RemoteRecorder:
    """A :class:`~metafgnet.tracking.recorder.Recorder` living in the execution's agent: the
    same methods with the same arguments, each one a round trip over the agent's socket."""

    def __init__(self, uri: str, execution: str,
                 connection: tuple[Connection, Path] | None = None):
        """Connected to the execution's agent (:func:`connect_agent`), or over ``connection``:
        an authenticated ``(connection, socket path)`` answered by :func:`serve_stage`."""
        self._conn, self.socket = connection or connect_agent(uri, execution)
        self._lock = threading.Lock()

    def __getattr__(self, op: str):
        if op not in operations():
            raise AttributeError(op)
        return lambda *args, **kwargs: self._call(op, args, kwargs)

    def _call(self, op: str, args: tuple, kwargs: dict):
        try:
            request = pickle.dumps((op, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a model of a class defined in __main__ or a function
            raise TrackingError(
                f"{op}: cannot send to the tracking agent ({type(exc).__name__}: {exc}); "
                "define the model's class in an importable module, or set "
                "`tracking.agent: false`") from exc
        with self._lock:
            try:
                self._conn.send_bytes(request)
                status, *reply = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError) as exc:
                raise AgentLost(
                    f"{op}: lost the tracking agent ({type(exc).__name__}: {exc}); its log is "
                    f"{self.socket.with_suffix('.log')}") from exc
        if status == "ok":
            return reply[0]
        message, remote_traceback = reply
        raise TrackingError(f"{message}\n(in the tracking agent:)\n{remote_traceback}"
                            if remote_traceback else message)

    def close(self) -> None:
        self._conn.close()


# -- agent side --------------------------------------------------------------------------------


class _Agent:
    def __init__(self, path: Path, idle_s: float):
        self.path, self.idle_s = path, idle_s
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        self.inode = path.stat().st_ino  # a later agent may re-bind the path: leave its socket
        self.threads: list[threading.Thread] = []
        self.last_active = time.monotonic()

    def run(self) -> None:
        self.server.settimeout(0.5)
        while True:
            try:
                sock, _ = self.server.accept()
            except TimeoutError:
                if not self._may_exit():
                    continue
                with file_lock(_lock_path(self.path), blocking=False) as locked:
                    if locked and not self._accept_pending():
                        with contextlib.suppress(OSError):
                            if self.path.stat().st_ino == self.inode:
                                self.path.unlink()
                        self.server.close()
                        if not _TROUBLE.is_set():  # nothing worth keeping in the log
                            self.path.with_suffix(".log").unlink(missing_ok=True)
                        return
                continue
            self._start(sock)

    def _may_exit(self) -> bool:
        self.threads = [t for t in self.threads if t.is_alive()]
        if self.threads:
            self.last_active = time.monotonic()
            return False
        return time.monotonic() - self.last_active >= self.idle_s

    def _accept_pending(self) -> bool:
        """Serve a connection that arrived just before the lock was taken, if any."""
        self.server.setblocking(False)
        try:
            sock, _ = self.server.accept()
        except BlockingIOError:
            return False
        finally:
            self.server.settimeout(0.5)
        self._start(sock)
        return True

    def _start(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        thread = threading.Thread(target=_serve_socket, args=(sock,), daemon=True)
        thread.start()
        self.threads.append(thread)
        self.last_active = time.monotonic()


def _loads(raw: bytes):
    try:
        return pickle.loads(raw)
    except Exception as exc:
        raise TrackingError(
            f"the tracking agent cannot load this call's arguments ({type(exc).__name__}: "
            f"{exc}): a logged model must be an instance of a class importable by module path "
            "(not one defined in a script's __main__), or set `tracking.agent: false`") from exc


def _serve_socket(sock: socket.socket) -> None:
    """Authenticate the process on an accepted socket, then serve it (:func:`serve_stage`)."""
    try:
        conn = handshake_agent(sock, agent_key())
    except TrackingError as exc:  # an AgentAuthError, or an unusable key file
        _TROUBLE.set()
        log.warning("refused a connection: %s", exc)
        return
    finally:
        sock.close()
    serve_stage(conn)


def serve_stage(conn: Connection) -> None:
    """Answer one stage's calls on its own Recorder until the stage disconnects (on an
    authenticated connection: :func:`handshake_agent`)."""
    from metafgnet.tracking.recorder import Recorder

    recorder = Recorder()
    try:
        while True:
            try:
                raw = conn.recv_bytes()
            except (EOFError, OSError):
                break
            op = "a call"  # until the message is read
            try:
                op, args, kwargs = _loads(raw)
                if op not in operations():
                    raise ValueError(f"unknown tracking call {op!r}")
                if op in ("log_model", "register_model"):
                    _MODELS_READY.wait()
                result = getattr(recorder, op)(*args, **kwargs)
                reply = ("ok", result)
            except Exception as exc:
                _TROUBLE.set()
                log.error("%s failed: %s", op, exc)
                # a known problem (TrackingError) is its message alone, without a traceback
                reply = (("error", str(exc), "") if isinstance(exc, TrackingError) else
                         ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            try:
                conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
            except (EOFError, OSError):
                break
    finally:
        if recorder.abandon():
            _TROUBLE.set()
            log.warning("a stage disconnected without ending its run: recorded as KILLED")
        conn.close()


def _import_mlflow() -> None:
    """MLflow itself, before serving anything: its package imports are not safe to run in two
    threads at once. Stages already connected wait in the listen backlog meanwhile."""
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking.context.registry import resolve_tags  # noqa: F401
    except Exception as exc:  # the calls themselves will raise with the details
        _TROUBLE.set()
        log.warning("importing mlflow failed: %s", exc)


def _import_model_flavor() -> None:
    """torch, MLflow's pytorch flavor and their one-off lazy work (the agent's largest start-up
    cost), in the background while the first stage trains; model calls wait for it."""
    try:
        from metafgnet.tracking.models import warm_up

        warm_up()
    except Exception as exc:  # the model calls themselves will raise with the details
        _TROUBLE.set()
        log.warning("warming up model logging failed: %s", exc)
    finally:
        _MODELS_READY.set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="metafgnet tracking agent (started by stages)")
    parser.add_argument("--socket", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s agent[{os.getpid()}] %(levelname)s %(message)s")
    with contextlib.suppress(OSError):
        os.nice(NICE)  # bookkeeping yields the CPU to training
    agent = _Agent(args.socket, float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S)))
    log.info("listening on %s", args.socket)
    _import_mlflow()
    log.info("ready")
    threading.Thread(target=_import_model_flavor, daemon=True).start()
    agent.run()


if __name__ == "__main__":
    main()
