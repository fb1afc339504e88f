"""The README's main job, small: every part started as a process, one JSON summary out.

Here on the session's stores (configured by URL): the demo leaves them running. That it stops
embedded stores it started itself is checked in tests/integration/test_devenv.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis
from sqlalchemy import Engine, text


def test_demo_runs_end_to_end(db: Engine, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "campaigns.cli.main", "demo", "--contacts", "300", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stopped the stores" not in result.stderr and "left running" not in result.stderr
    with db.connect() as conn:  # configured stores are not the demo's to stop
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    assert redis.Redis.from_url(os.environ["REDIS_URL"]).ping()
    summary = json.loads(result.stdout)
    assert set(summary) >= {
        "campaign_id",
        "counts",
        "simulator_accepted",
        "simulator_duplicates",
        "seconds",
    }
    counts = summary["counts"]
    assert summary["status"] == "completed"
    assert summary["simulator_duplicates"] == 0
    assert sum(counts.values()) == 300
    assert counts.get("in_progress", 0) == 0 and counts.get("initial", 0) == 0
    delivered = sum(counts.get(s, 0) for s in ("delivered", "read", "delivery_failed"))
    assert delivered == summary["simulator_accepted"]
