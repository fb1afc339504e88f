"""The dashboard's pages and the JSON it polls, on the real stack."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from campaigns.api import metrics
from campaigns.api.dashboard import STATIC
from campaigns.clients.telemetry import Telemetry
from campaigns.domain.outcomes import ERROR_CLASSES
from campaigns.runtime.stores import resolve
from tests.integration.test_api import CSV, create_campaign, wait_for_upload


@pytest.fixture
def sampler(monkeypatch: pytest.MonkeyPatch) -> metrics.WorkerSampler:
    fresh = metrics.WorkerSampler(inspect_timeout_s=0.5, max_age_s=60.0)
    monkeypatch.setattr(metrics, "SAMPLER", fresh)
    return fresh


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/campaigns/1"])
def test_pages_are_served_without_a_token(api: TestClient, path: str) -> None:
    api.headers.pop("Authorization")
    response = api.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/dashboard/static/dashboard.js"></script>' in response.text
    assert 'href="/dashboard/static/dashboard.css"' in response.text
    modules = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.glob("console/*.js"))
    assert "console/api.js" in modules
    served = [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")]
    for name, kind in served + [(m, "text/javascript") for m in modules]:
        asset = api.get(f"/dashboard/static/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
        assert asset.text == (STATIC / name).read_text()


@pytest.mark.parametrize(
    "name",
    [
        "dashboard.html",
        "../metrics.py",
        "..%2Fmetrics.py",
        "x.js",
        "console/../dashboard.py",
        "console/x.js",
        "console",
    ],
)
def test_only_the_listed_assets_are_served(api: TestClient, name: str) -> None:
    assert api.get(f"/dashboard/static/{name}").status_code == 404


def test_pages_load_nothing_from_outside() -> None:
    # The machines running it have no internet: no CDN script, font or stylesheet.
    for path in [p for p in STATIC.rglob("*") if p.is_file()]:
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", path.read_text())
        assert urls == ["http://www.w3.org/2000/svg"] or urls == [], (path.name, urls)


@pytest.mark.parametrize("path", ["/ops/queues", "/campaigns/1/errors", "/campaigns/1/rate"])
def test_dashboard_json_needs_the_token(api: TestClient, path: str) -> None:
    api.headers.pop("Authorization")
    assert api.get(path).status_code == 401


def test_ops_queues_shape_with_a_live_worker(
    api: TestClient, db: Engine, ingest_worker: Any, sampler: metrics.WorkerSampler
) -> None:
    from workers.app import app

    try:
        app.send_task("tests.noop", queue="webhooks")
        body = api.get("/ops/queues").json()
    finally:
        resolve_redis().delete("webhooks")
    assert [q["name"] for q in body["queues"]] == ["ingest", "dispatch", "webhooks"]
    by_name = {q["name"]: q for q in body["queues"]}
    assert by_name["webhooks"]["depth"] == 1
    assert by_name["webhooks"]["oldest_task_age_s"] == pytest.approx(0.0, abs=1.0)
    assert by_name["dispatch"] == {
        "name": "dispatch",
        "depth": 0,
        "oldest_task_age_s": None,
        "workers_alive": 0,
    }
    assert by_name["ingest"]["workers_alive"] >= 1
    assert any(w["queues"] == ["ingest"] for w in body["workers"])
    assert body["workers_error"] is None
    assert body["flower_url"] == resolve().settings.flower_url
    assert body["limiter"] == {"waits": 0, "wait_s": 0.0}
    assert body["reserved"] >= 0
    assert body["tasks_per_s"] is None  # one sample so far


def resolve_redis() -> Any:
    import redis

    return redis.Redis.from_url(resolve().redis_url)


def test_workers_error_is_reported_not_raised(
    api: TestClient, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = metrics.WorkerSampler(inspect_timeout_s=0.1)

    def refuse() -> metrics.WorkersSnapshot:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(broken, "_sample", refuse)
    monkeypatch.setattr(metrics, "SAMPLER", broken)
    body = api.get("/ops/queues").json()
    assert body["workers_error"] == "broker unreachable"
    assert {q["workers_alive"] for q in body["queues"]} == {None}


def test_tasks_per_second_from_two_samples() -> None:
    sampler = metrics.WorkerSampler(max_age_s=0.0)
    replies = iter([{"w1": 10, "w2": 5}, {"w1": 30, "w2": 1, "w3": 7}])

    def fake() -> metrics.WorkersSnapshot:
        totals = next(replies)
        now = time.time()
        grown = None
        if sampler._previous is not None:
            before, old = sampler._previous
            grown = sum(max(0, n - old[w]) for w, n in totals.items() if w in old) / (now - before)
        sampler._previous = (now, totals)
        return metrics.WorkersSnapshot(sampled_at=now, tasks_per_s=grown)

    sampler._sample = fake  # type: ignore[method-assign]
    first = sampler.get(wait=True)
    assert first is not None and first.tasks_per_s is None
    time.sleep(0.05)
    second = sampler.get(wait=True)
    assert second is not None and second.tasks_per_s is not None
    # w1 grew by 20; w2 restarted (counted as 0); w3 is new (no baseline).
    assert 20 / 1.0 < second.tasks_per_s < 20 / 0.05 * 1.01


def test_errors_are_grouped_by_code_with_their_meaning(
    api: TestClient, db: Engine, ingest_worker: Any
) -> None:
    campaign = create_campaign(api)
    cid = campaign["id"]
    csv = b"phone,first_name\n" + b"".join(f"+49151234567{i:02d},A\n".encode() for i in range(6))
    upload = api.post(
        f"/campaigns/{cid}/uploads", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert upload.status_code == 202, upload.text
    assert wait_for_upload(db, upload.json()["id"])["valid"] == 6
    with db.begin() as conn:
        ids = (
            conn.execute(
                text("SELECT id FROM contacts WHERE campaign_id = :c ORDER BY id"), {"c": cid}
            )
            .scalars()
            .all()
        )
        plan = [
            (ids[0], "error", 132001),
            (ids[1], "error", 132001),
            (ids[2], "error", 132001),
            (ids[3], "sending_failed", 131026),
            (ids[4], "retry_scheduled", 424242),
        ]
        for contact_id, state, code in plan:
            conn.execute(
                text("UPDATE contacts SET state = :s, error_code = :e WHERE id = :id"),
                {"s": state, "e": code, "id": contact_id},
            )
    response = api.get(f"/campaigns/{cid}/errors")
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"code": 132001, "meaning": ERROR_CLASSES[132001].meaning, "count": 3},
        {"code": 131026, "meaning": ERROR_CLASSES[131026].meaning, "count": 1},
        {"code": 424242, "meaning": "unknown platform error", "count": 1},
    ]
    assert len(api.get(f"/campaigns/{cid}/errors?limit=1").json()) == 1
    missing = api.get("/campaigns/999999/errors")
    assert missing.status_code == 404
    assert missing.json()["code"] == "campaign_not_found"


def test_rate_series_of_a_campaign(api: TestClient, db: Engine) -> None:
    campaign = create_campaign(api)
    cid = campaign["id"]
    now = time.time()

    async def main() -> None:
        client = aioredis.Redis.from_url(resolve().redis_url)
        await Telemetry(client).record_send_batch(
            campaign_id=cid,
            outcomes={"sent": 5},
            error_codes={},
            latencies_s=[],
            accepted_at=[now - 2] * 5,
            limiter_waits=0,
            limiter_wait_s=0.0,
        )
        await client.aclose()

    asyncio.run(main())
    points = api.get(f"/campaigns/{cid}/rate?seconds=30").json()
    assert len(points) == 30
    assert [p["t"] for p in points] == sorted(p["t"] for p in points)
    assert sum(p["accepted"] for p in points) == 5
    assert {"t": int(now - 2), "accepted": 5} in points
    assert api.get("/campaigns/999999/rate").status_code == 404
    assert api.get(f"/campaigns/{cid}/rate?seconds=0").status_code == 422


def test_uploads_used_by_the_dashboard_report_rejected_rows(
    api: TestClient, db: Engine, ingest_worker: Any
) -> None:
    campaign = create_campaign(api)
    cid = campaign["id"]
    upload = api.post(
        f"/campaigns/{cid}/uploads", content=CSV, headers={"Content-Type": "text/csv"}
    )
    wait_for_upload(db, upload.json()["id"])
    [report] = api.get(f"/campaigns/{cid}/uploads").json()
    assert (report["valid"], report["invalid"], report["reasons"]) == (2, 1, {"not_a_number": 1})
    rejected = api.get(f"/campaigns/{cid}/contacts.csv?state=invalid_record")
    assert rejected.status_code == 200
    assert "nope" in rejected.text
