"""The campaign dashboard: static pages, and the JSON they poll besides the campaign API.

The HTML, JS and CSS are served without a token (they hold no data); every fetch the page
makes carries the API bearer token, which the page asks for (its own prompt, again with a
message when the API refuses it) and keeps in localStorage (or takes from the URL fragment,
``#token=``, which browsers never send; never from the query string). No build step, no
CDN: the files in ``static/`` (an entry module and ``console/*.js``) are what the browser
runs, under the Content-Security-Policy of :mod:`campaigns.api.security`. The console uses
the public HTTP API only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from campaigns.api import metrics
from campaigns.api.deps import CampaignId, EngineDep, RedisDep, RuntimeDep
from campaigns.api.metrics import queue_stats, reserved_count
from campaigns.clients import telemetry
from campaigns.domain.refusals import Refusal, RefusalKind
from campaigns.runtime.queues import QUEUES
from campaigns.services import monitoring

STATIC = Path(__file__).parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# Listed once at import: the stylesheet, the entry module and the console's modules. A URL
# only ever selects one of these; nothing from it reaches the disk.
_ASSETS = {
    path.relative_to(STATIC).as_posix(): _TYPES[path.suffix]
    for path in sorted([*STATIC.glob("dashboard.*"), *STATIC.glob("console/*.js")])
    if path.suffix in _TYPES
}

pages = APIRouter(include_in_schema=False)
router = APIRouter()


# --------------------------------------------------------------------------- pages (no token)


def _page() -> FileResponse:
    # no-cache: an operator gets the new dashboard right after a deploy.
    return FileResponse(
        STATIC / "dashboard.html",
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


@pages.get("/dashboard")
def dashboard() -> FileResponse:
    return _page()


@pages.get("/dashboard/contacts")
def dashboard_contacts() -> FileResponse:
    return _page()


@pages.get("/dashboard/campaigns/{campaign_id}")
def dashboard_campaign(campaign_id: int) -> FileResponse:
    return _page()


@pages.get("/dashboard/static/{name:path}")
def dashboard_asset(name: str) -> FileResponse:
    media_type = _ASSETS.get(name)
    if media_type is None:  # a fixed list: no path from the URL ever reaches the disk
        raise Refusal("not_found", "no such dashboard asset", kind=RefusalKind.NOT_FOUND)
    return FileResponse(STATIC / name, media_type=media_type, headers={"Cache-Control": "no-cache"})


# --------------------------------------------------------------------------- JSON (token)


class ErrorCount(BaseModel):
    code: int
    meaning: str
    count: int


class RatePoint(BaseModel):
    t: int = Field(description="unix second")
    accepted: int


class QueueOut(BaseModel):
    name: str
    depth: int
    oldest_task_age_s: float | None = Field(
        description="age of the oldest waiting task (since first seen at the queue head)"
    )
    workers_alive: int | None = Field(description="null when the workers could not be asked")


class WorkerOut(BaseModel):
    name: str
    queues: list[str]
    processed: int
    concurrency: int | None


class LimiterOut(BaseModel):
    waits: int = Field(description="sends that waited for a token, since Redis started")
    wait_s: float


class OpsQueues(BaseModel):
    queues: list[QueueOut]
    reserved: int = Field(description="tasks delivered to workers, not acknowledged yet")
    workers: list[WorkerOut]
    workers_sampled_at: float | None
    workers_error: str | None
    tasks_per_s: float | None
    limiter: LimiterOut
    flower_url: str


@router.get("/campaigns/{campaign_id}/errors", response_model=list[ErrorCount])
def campaign_errors(
    campaign_id: CampaignId, engine: EngineDep, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> list[ErrorCount]:
    """The most frequent platform error codes of the campaign's contacts, with their meaning."""
    return [
        ErrorCount(code=e.code, meaning=e.meaning, count=e.count)
        for e in monitoring.error_codes(engine, campaign_id, limit)
    ]


@router.get("/campaigns/{campaign_id}/rate", response_model=list[RatePoint])
def campaign_rate(
    campaign_id: CampaignId,
    engine: EngineDep,
    client: RedisDep,
    seconds: Annotated[int, Query(ge=1, le=telemetry.RATE_TTL_S)] = 300,
) -> list[RatePoint]:
    """Messages accepted per second, the last ``seconds`` complete seconds, oldest first."""
    monitoring.require_campaign(engine, campaign_id)
    series = telemetry.rate_series(client, campaign_id, seconds=seconds)
    return [RatePoint(t=t, accepted=n) for t, n in series]


@router.get("/ops/queues", response_model=OpsQueues)
def ops_queues(client: RedisDep, runtime: RuntimeDep) -> OpsQueues:
    """Celery queues and workers. A def route: Redis calls and the sampler run in a thread."""
    snap = metrics.SAMPLER.get(wait=False)
    alive = snap.alive_per_queue() if snap is not None and snap.error is None else None
    limiter = telemetry.read_snapshot(client)
    return OpsQueues(
        queues=[
            QueueOut(
                name=q.name,
                depth=q.depth,
                oldest_task_age_s=q.oldest_task_age_s,
                workers_alive=alive.get(q.name) if alive is not None else None,
            )
            for q in queue_stats(client, QUEUES)
        ],
        reserved=reserved_count(client),
        workers=[
            WorkerOut(
                name=w.name, queues=list(w.queues), processed=w.processed, concurrency=w.concurrency
            )
            for w in (snap.workers if snap is not None else ())
        ],
        workers_sampled_at=snap.sampled_at if snap is not None else None,
        workers_error=snap.error if snap is not None else None,
        tasks_per_s=snap.tasks_per_s if snap is not None else None,
        limiter=LimiterOut(waits=limiter.limiter_waits, wait_s=limiter.limiter_wait_s),
        flower_url=runtime.settings.flower_url,
    )
