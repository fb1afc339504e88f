"""`wa-campaigns dev up/down` on a fresh data dir: idempotent, prints exports for eval."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from campaigns.runtime.embedded import EmbeddedRedis


def dev(data_dir: Path, action: str) -> str:
    env = {"DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "campaigns.cli.main", "dev", action],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def test_dev_up_is_idempotent_and_down_stops_both(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    first = dev(data_dir, "up")
    second = dev(data_dir, "up")
    assert first == second
    exports = dict(line.removeprefix("export ").split("=", 1) for line in first.splitlines())
    assert set(exports) == {"DATABASE_URL", "REDIS_URL"}
    database_url = exports["DATABASE_URL"].strip("'").replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(database_url) as conn:
        tables = {
            r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    assert {"campaigns", "uploads", "contacts", "contact_events", "alembic_version"} <= tables
    assert redis.Redis.from_url(exports["REDIS_URL"].strip("'")).ping()
    appendonly = redis.Redis.from_url(exports["REDIS_URL"].strip("'")).config_get("appendonly")
    assert appendonly == {"appendonly": "yes"}
    assert (
        "postgres" in dev(data_dir, "down")
        and EmbeddedRedis(data_dir / "redis").running_pid() is None
    )


def test_the_demo_stops_only_the_stores_it_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from campaigns.dev import demo
    from campaigns.runtime.config import Settings

    data_dir = tmp_path / "d"
    settings = Settings(
        database_url="postgresql+psycopg://configured/db", redis_url=None, data_dir=data_dir
    )
    assert demo._stores_it_starts(settings) == {"redis"}  # a configured URL is not its own
    store = EmbeddedRedis(data_dir / "redis")
    store.start()
    try:
        assert demo._stores_it_starts(settings) == set()  # running already: not its own
        demo._leave_stores(data_dir, {"redis"}, keep=True, say=print)
        assert store.running_pid() is not None
        said = capsys.readouterr().err
        assert "left running: embedded redis" in said and "wa-campaigns dev down" in said
        demo._leave_stores(data_dir, {"redis"}, keep=False, say=print)
        assert store.running_pid() is None
        assert "stopped the stores the demo started: redis" in capsys.readouterr().out
    finally:
        store.stop()
