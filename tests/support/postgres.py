"""A throw-away PostgreSQL cluster on 127.0.0.1 for the tests that need one.

The server binaries are Debian's (``apt-get install postgresql``, which ``.ci/run`` does); the
cluster runs as an unprivileged user (``pg_ctl`` refuses root: as root the ``postgres`` account
runs it, otherwise the current user), in a fresh folder under the system temporary folder, on a
free port, with ``trust`` authentication on loopback only. :func:`unavailable` says why no
cluster can be started here (the fixture skips with that reason).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from support.servers import free_port

SUPERUSER = "postgres"
START_TIMEOUT_S = 60


def server_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: Debian's newest, else the PATH's."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                    key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if debian:
        return debian[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _account() -> pwd.struct_passwd | None:
    """Who runs the server: the ``postgres`` account under root, else the current user."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    if server_bin() is None:
        return "no PostgreSQL server binaries (apt-get install postgresql)"
    if _account() is None:
        return "running as root without a `postgres` account to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "no PostgreSQL driver (pip install -e '.[postgres]')"
    return None


@dataclasses.dataclass(frozen=True)
class Cluster:
    port: int
    data_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _run(account: pwd.struct_passwd, cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    as_other = account.pw_uid != os.geteuid()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S,
                          user=account.pw_uid if as_other else None,
                          group=account.pw_gid if as_other else None,
                          extra_groups=[] if as_other else None)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """Start a cluster (``initdb -A trust``, ``pg_ctl start``), yield it, stop and delete it.
    Raises RuntimeError with the server's output when it does not start."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    bindir, account = server_bin(), _account()
    assert bindir is not None and account is not None
    top = Path(tempfile.mkdtemp(prefix="metafgnet-pg-"))  # not under pytest's 0700 root folder
    os.chown(top, account.pw_uid, account.pw_gid)
    data, port = top / "data", free_port()
    started = False
    try:
        init = _run(account, [str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                              "-U", SUPERUSER, "-E", "UTF8", "--no-sync"], top)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        options = (f"-p {port} -k {top} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=100")
        start = _run(account, [str(bindir / "pg_ctl"), "-D", str(data), "-o", options,
                               "-l", str(top / "server.log"), "-w", "-t", str(START_TIMEOUT_S),
                               "start"], top)
        started = start.returncode == 0
        if not started:
            log = (top / "server.log").read_text() if (top / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{log}")
        yield Cluster(port, data)
    finally:
        if started:
            _run(account, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                           "stop"], top)
        shutil.rmtree(top, ignore_errors=True)
