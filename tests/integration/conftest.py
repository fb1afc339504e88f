from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from campaigns.dev.simulator import RunningSimulator, SimulatorConfig
from tests.conftest import API_TOKEN


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    """The simulator in a thread, no pair limit, short timeouts: for the dispatch tests."""
    config = SimulatorConfig(port=0, pair_interval_s=0, timeout_hang_s=3.0)
    with RunningSimulator(config) as running:
        yield running


@pytest.fixture(scope="session")
def ingest_worker(stack: dict[str, str]) -> Iterator[Any]:
    """A real Celery worker (in a thread) consuming the ingest queue of the real Redis broker."""
    from celery.contrib.testing.worker import start_worker
    from kombu.asynchronous import set_event_loop

    from workers.app import app

    # Its own kombu event loop (the loop is process-global): a worker started on another
    # in-thread worker's loop never runs countdown tasks (see webhooks_worker).
    set_event_loop(None)
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        queues=["ingest"],
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker


@pytest.fixture
def api(db: object) -> Iterator[TestClient]:
    from campaigns.api.app import create_app

    with TestClient(create_app(), headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        yield client
