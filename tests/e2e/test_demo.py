"""The README's main job, small: every part started as a process, one JSON summary out, on
embedded stores the demo starts itself and stops at the end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from campaigns.runtime import embedded
from tests.fixtures.leftovers import store_processes

# What the test session exported for its own stores: the demo must start its own.
_OUTER = ("DATABASE_URL", "REDIS_URL", "PG_SERVER_URI", "DATA_DIR")


def test_demo_runs_end_to_end_and_stops_its_stores() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="wa-demo-"))  # short: Postgres' socket is in it
    env = {k: v for k, v in os.environ.items() if k not in _OUTER}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "campaigns.cli.main", "demo", "--contacts", "300", "--json"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**env, "DATA_DIR": str(data_dir)},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert (data_dir / "pg" / "PG_VERSION").exists()  # it did run on its own stores
        assert store_processes(data_dir) == []
        assert "left running" not in result.stderr
    finally:
        embedded.down(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
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
