"""/metrics on the real stack: Postgres rows, Redis telemetry and Celery queues as Prometheus text."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from campaigns.api import metrics
from campaigns.clients.telemetry import SyncTelemetry, Telemetry
from campaigns.runtime.stores import resolve
from tests.integration.test_api import CSV, create_campaign, wait_for_upload


@pytest.fixture
def sampler(monkeypatch: pytest.MonkeyPatch) -> metrics.WorkerSampler:
    fresh = metrics.WorkerSampler(inspect_timeout_s=0.5, max_age_s=0.0)
    monkeypatch.setattr(metrics, "SAMPLER", fresh)
    return fresh


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(resolve().redis_url)
    yield client
    client.close()


def listener_url(api: TestClient) -> str:
    """The /metrics listener the app's lifespan started (METRICS_PORT=0: a free port)."""
    app = cast(FastAPI, api.app)
    return str(app.state.metrics_listener.url)


def families(body: str) -> dict[str, Any]:
    found = {}
    for family in text_string_to_metric_families(body):
        # The parser drops "_total" from counter family names; put it back to compare.
        name = family.name + "_total" if family.type == "counter" else family.name
        found[name] = family
    return found


def samples(family: Any, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def record(redis_url: str, campaign_id: int) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        t = Telemetry(client)
        await t.record_send_batch(
            campaign_id=campaign_id,
            outcomes={"sent": 2, "error": 1},
            error_codes={132001: 1},
            latencies_s=[0.2, 0.3, 4.0],
            accepted_at=[1.0, 2.0],
            limiter_waits=3,
            limiter_wait_s=0.5,
            suppressed={"opted_out": 2},
        )
        await client.aclose()

    asyncio.run(main())
    sync = SyncTelemetry(redis.Redis.from_url(redis_url))
    sync.record_webhook_events(by_status={"delivered": 2, "read": 1}, lags_s=[1.5, 20.0])
    sync.record_contact_checks({("valid", True): 2, ("invalid", False): 1})
    # Upload rows are not recorded here: the test's real upload (the ingest task) records them.


@pytest.mark.usefixtures("sampler")
def test_metrics_render_every_family_after_an_upload_and_sends(
    api: TestClient, db: Engine, ingest_worker: Any, broker: redis.Redis
) -> None:
    campaign = create_campaign(api)
    cid = campaign["id"]
    upload = api.post(
        f"/campaigns/{cid}/uploads", content=CSV, headers={"Content-Type": "text/csv"}
    )
    assert upload.status_code == 202, upload.text
    wait_for_upload(db, upload.json()["id"])
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE campaigns SET status = 'paused', "
                "status_reason = 'paused automatically: 132001 template does not exist' "
                "WHERE id = :id"
            ),
            {"id": cid},
        )
    record(resolve().redis_url, cid)

    # Exporters are scraped without a token, on the metrics listener, not the API port.
    assert api.get("/metrics").status_code == 404
    response = httpx.get(listener_url(api), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = families(response.text)
    assert set(metrics.METRIC_NAMES) <= set(found), sorted(set(metrics.METRIC_NAMES) - set(found))

    c = str(cid)
    assert samples(found["wa_messages_total"], "wa_messages_total") == {
        (("campaign_id", c), ("outcome", "error")): 1.0,
        (("campaign_id", c), ("outcome", "sent")): 2.0,
    }
    assert samples(found["wa_provider_errors_total"], "wa_provider_errors_total") == {
        (("code", "132001"),): 1.0
    }
    latency = found["wa_send_latency_seconds"]
    assert samples(latency, "wa_send_latency_seconds_count") == {(): 3.0}
    assert samples(latency, "wa_send_latency_seconds_bucket")[(("le", "0.25"),)] == 1.0
    assert samples(latency, "wa_send_latency_seconds_bucket")[(("le", "+Inf"),)] == 3.0
    assert samples(latency, "wa_send_latency_seconds_sum")[()] == pytest.approx(4.5)
    assert samples(found["wa_webhook_events_total"], "wa_webhook_events_total") == {
        (("status", "delivered"),): 2.0,
        (("status", "read"),): 1.0,
    }
    assert samples(found["wa_webhook_lag_seconds"], "wa_webhook_lag_seconds_count") == {(): 2.0}
    assert samples(found["wa_ratelimiter_waits_total"], "wa_ratelimiter_waits_total") == {(): 3.0}
    suppressed = samples(found["wa_contacts_suppressed_total"], "wa_contacts_suppressed_total")
    assert suppressed[(("reason", "opted_out"),)] == 2.0
    assert suppressed[(("reason", "blocked"),)] == 0.0
    assert samples(found["wa_contact_checks_total"], "wa_contact_checks_total") == {
        (("cached", "true"), ("status", "valid")): 2.0,
        (("cached", "false"), ("status", "invalid")): 1.0,
    }

    contacts = samples(found["wa_contacts"], "wa_contacts")
    assert contacts == {
        (("campaign_id", c), ("state", "initial")): 2.0,
        (("campaign_id", c), ("state", "invalid_record")): 1.0,
    }
    campaigns = samples(found["wa_campaigns"], "wa_campaigns")
    assert campaigns[(("status", "paused"),)] == 1.0
    assert campaigns[(("status", "running"),)] == 0.0
    assert samples(found["wa_campaign_auto_paused"], "wa_campaign_auto_paused") == {
        (("campaign_id", c),): 1.0
    }
    assert samples(found["wa_upload_rows_total"], "wa_upload_rows_total") == {
        (("result", "valid"),): 2.0,
        (("result", "invalid"),): 1.0,
    }
    assert samples(found["wa_ingest_rows_total"], "wa_ingest_rows_total") == {
        (("result", "valid"),): 2.0,
        (("result", "invalid"),): 1.0,
    }
    depth = samples(found["wa_queue_depth"], "wa_queue_depth")
    assert set(depth) == {(("queue", q),) for q in ("ingest", "dispatch", "webhooks")}
    # The in-thread ingest worker answers Celery's inspect broadcast.
    alive = samples(found["wa_workers_alive"], "wa_workers_alive")
    assert set(alive) == {(("queue", q),) for q in ("ingest", "dispatch", "webhooks")}
    assert alive[(("queue", "ingest"),)] >= 1.0
    # (Other queues' counts depend on which session-scoped test workers this process started.)


def test_queue_depth_counts_priority_lists_and_ages_the_oldest_task(
    stack: dict[str, str], db: Engine, broker: redis.Redis
) -> None:
    from workers.app import app

    try:
        # A queue no worker consumes (session-scoped test workers take the real ones).
        app.send_task("tests.noop", queue="parked")
        app.send_task("tests.noop", queue="parked", priority=5)
        app.send_task("tests.noop", queue="parked")
        assert broker.llen("parked") == 2
        assert broker.llen("parked\x06\x163") == 1

        first = {q.name: q for q in metrics.queue_stats(broker, ("ingest", "parked"), now=1000.0)}
        assert first["parked"].depth == 3
        assert first["parked"].oldest_task_age_s == 0.0
        assert first["ingest"].depth == 0 and first["ingest"].oldest_task_age_s is None
        later = {q.name: q for q in metrics.queue_stats(broker, ("ingest", "parked"), now=1007.5)}
        assert later["parked"].oldest_task_age_s == pytest.approx(7.5)

        # The head is consumed: the next head is a task seen for the first time.
        broker.rpop("parked")
        broker.delete("parked\x06\x163")
        after = {q.name: q for q in metrics.queue_stats(broker, ("ingest", "parked"), now=1010.0)}
        assert after["parked"].depth == 1
        assert after["parked"].oldest_task_age_s == 0.0
    finally:
        broker.delete("parked", "parked\x06\x163", "parked\x06\x166", "parked\x06\x169")
