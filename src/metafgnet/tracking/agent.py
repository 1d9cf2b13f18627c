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
instances of classes importable by module path, as for MLflow's own pickle format. The socket
lives in a ``0700`` folder of this user (``$XDG_RUNTIME_DIR`` or the temp folder).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import metafgnet
from metafgnet.io import file_lock, user_runtime_dir
from metafgnet.tracking.uri import TrackingError

log = logging.getLogger(__name__)

IDLE_ENV = "METAFGNET_AGENT_IDLE_S"
DEFAULT_IDLE_S = 60.0  # > the gap between two stages, even under load (torch import and data)
START_TIMEOUT_S = 30.0
NICE = 19  # the lowest priority: bookkeeping runs on what training leaves idle
# The methods of Recorder a stage may call; nothing else is dispatched.
OPS = frozenset({"open", "log_metrics", "log_params", "set_tags", "log_artifact",
                 "log_artifacts", "log_dict", "log_text", "log_datasets", "log_model",
                 "register_model",
                 "summarise_execution",
                 "finish", "fail", "pid"})
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


# -- stage side --------------------------------------------------------------------------------


def _connect(path: Path) -> Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return Connection(sock.detach())


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

    def __init__(self, uri: str, execution: str):
        self._conn, self.socket = connect_agent(uri, execution)
        self._lock = threading.Lock()

    def __getattr__(self, op: str):
        if op not in OPS:
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
                raise TrackingError(
                    f"{op}: lost the tracking agent ({type(exc).__name__}: {exc}); its log is "
                    f"{self.socket.with_suffix('.log')}") from exc
        if status == "ok":
            return reply[0]
        message, remote_traceback = reply
        raise TrackingError(f"{message}\n(in the tracking agent:)\n{remote_traceback}")

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
        sock.setblocking(True)
        self._start(sock)
        return True

    def _start(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        thread = threading.Thread(target=serve_stage, args=(Connection(sock.detach()),),
                                  daemon=True)
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


def serve_stage(conn: Connection) -> None:
    """Answer one stage's calls on its own Recorder until the stage disconnects."""
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
                if op not in OPS:
                    raise ValueError(f"unknown tracking call {op!r}")
                if op in ("log_model", "register_model"):
                    _MODELS_READY.wait()
                result = os.getpid() if op == "pid" else getattr(recorder, op)(*args, **kwargs)
                reply = ("ok", result)
            except Exception as exc:
                _TROUBLE.set()
                log.error("%s failed: %s", op, exc)
                reply = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
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
