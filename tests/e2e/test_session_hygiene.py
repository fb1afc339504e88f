"""A test session stops the embedded Postgres and Redis it started: CI leaves no server behind.

Runs a small session as ``scripts/test`` does (xdist workers start the servers, the
controller stops them) on a data dir of its own. ``WA_TEST_KEEP_SERVERS`` and the leases of
concurrent sessions are checked in tests/unit/test_session_leases.py.
"""

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
from tests.fixtures.processes import wait_for

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


def test_a_session_stops_the_servers_it_started(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _OUTER and not k.startswith("PYTEST_")}
    env["WA_TEST_DATA_DIR"] = str(data_dir)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2"]
    log = data_dir / "session.log"
    with log.open("wb") as out:
        session = subprocess.Popen(
            [*argv, *INNER_TESTS], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            # While it runs, its servers are there (and found by their data dir).
            wait_for(
                lambda: embedded.running(data_dir) == {"postgres", "redis"},
                timeout=300,
                what="the session's servers",
            )
            assert len(store_processes(data_dir)) >= 2  # the postmaster (+ helpers), redis
            assert session.wait(timeout=600) == 0, log.read_text()[-3000:]
        finally:
            session.kill()
    assert "2 passed" in log.read_text()
    assert store_processes(data_dir) == []
    assert embedded.running(data_dir) == set()
    assert not list((data_dir / "sessions").iterdir())  # its lease went with it
