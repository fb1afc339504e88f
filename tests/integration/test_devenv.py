"""`wa-campaigns dev up/down` on a fresh data dir: idempotent, prints exports for eval."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
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
