"""The README's main job, small: every part started as a process, one JSON summary out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine


def test_demo_runs_end_to_end(db: Engine, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "campaigns.cli.main", "demo", "--contacts", "300", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
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
