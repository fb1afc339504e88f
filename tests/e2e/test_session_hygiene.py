"""A test session stops the embedded Postgres and Redis it started (CI leaves no server
behind); ``WA_TEST_KEEP_SERVERS=1`` keeps them for the next session, which reuses them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from campaigns.runtime import embedded
from tests.fixtures.leftovers import store_processes

ROOT = Path(__file__).resolve().parents[2]
# Two quick tests on the stores, so that both xdist workers start (or find) the servers.
INNER_TESTS = [
    "tests/integration/test_refusals_http.py::test_the_documented_problem_model_is_the_refusal_shape",
    "tests/integration/test_api.py::test_unknown_campaign_and_bad_body",
]
# What this session exported for its own stores must not reach the inner session.
_OUTER = ("DATABASE_URL", "REDIS_URL", "PG_SERVER_URI", "DATA_DIR", "WA_TEST_KEEP_SERVERS")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wa-hyg-"))  # short: Postgres' socket lives under it
    try:
        yield path
    finally:
        embedded.down(path)
        shutil.rmtree(path, ignore_errors=True)


def run_session(data_dir: Path, *, keep: bool, workers: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _OUTER and not k.startswith("PYTEST_")}
    env["WA_TEST_DATA_DIR"] = str(data_dir)
    if keep:
        env["WA_TEST_KEEP_SERVERS"] = "1"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers)]
    done = subprocess.run(
        [*argv, *INNER_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 passed" in done.stdout


def test_the_last_session_stops_the_servers(data_dir: Path) -> None:
    run_session(data_dir, keep=True, workers=0)  # one process: the quicker set-up
    kept = store_processes(data_dir)
    assert {"postgres", "redis"} == embedded.running(data_dir)
    assert len(kept) >= 2  # the postmaster (and its helpers) and redis-server
    # As scripts/test runs: xdist workers use the servers, the controller stops them.
    run_session(data_dir, keep=False, workers=2)
    assert store_processes(data_dir) == []
    assert embedded.running(data_dir) == set()
    assert not list((data_dir / "sessions").iterdir())  # no lease left behind
