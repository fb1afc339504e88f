"""The test session's server hygiene (tests/conftest.py): the last session to end stops the
servers, unless WA_TEST_KEEP_SERVERS=1; a dead session's lease does not keep them alive."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from campaigns.runtime import embedded
from tests import conftest


@pytest.fixture
def stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Where the session's servers live is tmp_path; the data dirs ``down`` was called for."""
    calls: list[Path] = []

    def down(data_dir: Path) -> list[str]:
        calls.append(data_dir)
        return []

    monkeypatch.setattr(conftest, "TEST_DATA", tmp_path)
    monkeypatch.setattr(embedded, "down", down)
    return calls


def session_ends(worker: bool = False) -> None:
    config = SimpleNamespace(workerinput={}) if worker else SimpleNamespace()
    conftest.pytest_configure(cast(pytest.Config, config))
    conftest.pytest_unconfigure(cast(pytest.Config, config))


def test_the_last_session_stops_the_servers(stopped: list[Path], tmp_path: Path) -> None:
    session_ends()
    assert stopped == [tmp_path]
    assert list((tmp_path / "sessions").iterdir()) == []


def test_an_xdist_worker_never_stops_them(stopped: list[Path], tmp_path: Path) -> None:
    session_ends(worker=True)
    assert stopped == []


def test_keep_servers_leaves_them(
    stopped: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(conftest, "KEEP_SERVERS", True)
    session_ends()
    assert stopped == []
    assert list((tmp_path / "sessions").iterdir()) == []  # the lease goes all the same


def test_a_running_session_keeps_them(stopped: list[Path], tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.05)
        (tmp_path / "sessions").mkdir()
        (tmp_path / "sessions" / str(other.pid)).touch()  # written after it started
        session_ends()
        assert stopped == []
        other.kill()
        other.wait()
        session_ends()  # that session is gone: its lease no longer counts
        assert stopped == [tmp_path]
    finally:
        other.kill()
        other.wait()


def test_a_lease_older_than_its_process_is_another_session(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    lease = sessions / str(os.getpid())
    lease.touch()
    assert conftest._live_leases(sessions) == [lease]
    os.utime(lease, (0, 0))  # written long before this process started: pid reused
    assert conftest._live_leases(sessions) == []
    assert not lease.exists()
