"""Session-wide embedded Postgres and Redis; one database and one Redis db per xdist worker.

The servers (under ``.data/test``, or ``WA_TEST_DATA_DIR``) are stopped when the last test
session using them ends; ``WA_TEST_KEEP_SERVERS=1`` leaves them running for the next run
(local speed; ``wa-campaigns dev down`` with ``DATA_DIR=.data/test`` stops them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

# The live stack (simulator, API, worker processes) for e2e and reliability tests.
pytest_plugins = ["tests.fixtures.live"]

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = Path(os.environ.get("WA_TEST_DATA_DIR") or ROOT / ".data" / "test").resolve()
API_TOKEN = "test-token-0123456789"
KEEP_SERVERS = os.environ.get("WA_TEST_KEEP_SERVERS", "") == "1"
# Anything that resolves the stores before the ``stack`` fixture exported their URLs (an import
# that builds the Celery app) starts or finds the test servers, which the session stops: never
# a development stack under .data that would outlive the session.
os.environ.setdefault("DATA_DIR", str(TEST_DATA))


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0)


# Separate test runs sharing one embedded server (e.g. two checkouts) pick different slots.
SLOT = int(os.environ.get("WA_TEST_SLOT", "0"))


@contextmanager
def exported(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` in this process's environment (and a fresh runtime) until the block ends."""
    from campaigns.runtime import stores as runtime

    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    runtime.reset()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        runtime.reset()


def truncate_all(engine: Engine) -> None:
    """Every table but alembic's emptied, ids restarted."""
    with engine.begin() as conn:
        tables = conn.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
        ).scalars()
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Real Postgres and Redis (embedded), configured through the environment like production."""
    from campaigns.runtime import embedded
    from campaigns.storage import migrate

    index = _worker_index()
    pg = embedded.EmbeddedPostgres(TEST_DATA / "pg")
    server_uri = pg.start()
    database_url = embedded.ensure_database(server_uri, f"wa_test_{SLOT}_{index}", recreate=True)
    migrate.upgrade(database_url)
    redis_base = embedded.EmbeddedRedis(TEST_DATA / "redis").start()
    redis_url = redis_base.rsplit("/", 1)[0] + f"/{1 + SLOT * 4 + index}"
    data_dir = tmp_path_factory.mktemp("data")
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "API_TOKENS": API_TOKEN,
        "PG_SERVER_URI": server_uri,
        # Every app a test starts has its own /metrics listener: a free port each, so that
        # parallel test processes (and other checkouts) never fight over 9100.
        "METRICS_PORT": "0",
    }
    with exported(env):
        yield env


@pytest.fixture
def db(stack: dict[str, str]) -> object:
    """The engine on a clean database (tables truncated) and a flushed Redis db."""
    import redis

    from campaigns.runtime.stores import resolve

    engine = resolve().engine
    truncate_all(engine)
    redis.Redis.from_url(stack["REDIS_URL"]).flushdb()
    return engine


# --------------------------------------------------------------------------- server hygiene
# Every session (the xdist controller, or a plain run) holds a lease file while it runs; the
# last one to end stops the servers. Workers start the servers lazily (the ``stack``
# fixture) and never stop them: other workers may still be using them.


def _lease(config: pytest.Config) -> Path | None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller holds the lease
        return None
    return TEST_DATA / "sessions" / str(os.getpid())


def pytest_configure(config: pytest.Config) -> None:
    lease = _lease(config)
    if lease is not None:
        lease.parent.mkdir(parents=True, exist_ok=True)
        lease.touch()


def pytest_unconfigure(config: pytest.Config) -> None:
    lease = _lease(config)
    if lease is None:
        return
    lease.unlink(missing_ok=True)
    if KEEP_SERVERS or _live_leases(lease.parent):
        return
    from campaigns.runtime import embedded

    embedded.down(TEST_DATA)


def _live_leases(sessions: Path) -> list[Path]:
    """Leases of sessions still running (a killed session's lease is dropped)."""
    import psutil

    live = []
    for lease in sessions.iterdir():
        try:
            # The same pid started after the lease was written is another process.
            alive = psutil.Process(int(lease.name)).create_time() <= lease.stat().st_mtime + 1
        except (ValueError, OSError, psutil.Error):
            alive = False
        if alive:
            live.append(lease)
        else:
            lease.unlink(missing_ok=True)
    return live


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        for kind in ("integration", "e2e", "reliability"):
            if f"{os.sep}{kind}{os.sep}" in path:
                item.add_marker(getattr(pytest.mark, kind))
