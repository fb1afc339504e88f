"""Session-wide embedded Postgres and Redis; one database and one Redis db per xdist worker."""

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
TEST_DATA = ROOT / ".data" / "test"
API_TOKEN = "test-token-0123456789"


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        for kind in ("integration", "e2e", "reliability"):
            if f"{os.sep}{kind}{os.sep}" in path:
                item.add_marker(getattr(pytest.mark, kind))
