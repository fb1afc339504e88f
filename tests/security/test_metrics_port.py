"""/metrics: 404 on the API port, served on its own listener, each scrape's query bounded."""

from __future__ import annotations

import threading
import time
from typing import cast

import httpx
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from campaigns.api import metrics
from campaigns.runtime.stores import resolve
from tests.security.support import serving


def _listener(api: TestClient) -> metrics.MetricsListener:
    listener = cast(FastAPI, api.app).state.metrics_listener
    assert isinstance(listener, metrics.MetricsListener)
    return listener


def test_metrics_are_not_on_the_api_port_but_on_their_listener(api: TestClient) -> None:
    api.headers.pop("Authorization")
    assert api.get("/metrics").status_code == 404
    listener = _listener(api)
    host, port = listener.address
    assert host == "127.0.0.1" and port > 0  # METRICS_HOST's default: loopback
    response = httpx.get(listener.url, timeout=30)
    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"wa_campaigns", "wa_queue_depth", "wa_contacts"} <= names


def test_a_real_server_answers_404_for_metrics(db: Engine) -> None:
    with serving() as base:
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 404


def test_a_scrape_never_waits_long_for_a_locked_database(db: Engine) -> None:
    runtime = resolve()
    client = redis.Redis.from_url(runtime.redis_url)
    sampler = metrics.WorkerSampler(inspect_timeout_s=0.2, max_age_s=60.0)
    registry = metrics.registry_for(runtime.engine, client, sampler, query_timeout_s=0.3)
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with runtime.engine.begin() as conn:
            conn.execute(text("LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        from prometheus_client import generate_latest

        body = generate_latest(registry).decode()
        elapsed = time.monotonic() - started
    finally:
        release.set()
        holder.join(10)
    # The database families are skipped after the statement timeout; the rest is served.
    assert elapsed < 10, elapsed
    names = {f.name for f in text_string_to_metric_families(body)}
    assert "wa_queue_depth" in names and "wa_contacts" not in names
    # Once the lock is gone the same registry serves the database families again.
    names = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert "wa_contacts" in names
