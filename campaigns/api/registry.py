"""The contact registry (``/contacts``): a person's record, operator changes one by one or
in bulk, and the contacts check. ``{phone}`` is an E.164 number with or without its + (a +
URL-encoded as %2B) or a wa_id; anything else answers 422 ``invalid_phone``."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from campaigns.api.deps import CampaignId, EngineDep, PhonePath, RedisDep, RuntimeDep
from campaigns.clients.telemetry import SyncTelemetry
from campaigns.runtime.contact_checks import make_checker
from campaigns.services import registry
from schemas.api import Problem
from schemas.registry import (
    BlockBody,
    BulkBody,
    BulkReport,
    CheckBody,
    CheckOut,
    PersonOut,
    RemovedOut,
    SourceBody,
    SuppressedOut,
)

router = APIRouter(tags=["contacts"])

_REFUSED: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no record of this person"},
    422: {"model": Problem, "description": "not a phone number or wa_id (invalid_phone)"},
}


@router.post("/contacts/check", response_model=CheckOut)
async def check_contacts(body: CheckBody, runtime: RuntimeDep, client: RedisDep) -> CheckOut:
    """Seeds 002/004: `valid` (with `wa_id`), `invalid`, `processing` (no_wait: a worker
    asks; call again) or `failed` per item, in input order. Answers are kept for
    CONTACT_CHECK_TTL_H hours unless `force_check`; without WHATSAPP_CONTACTS_URL the
    registry answers from real sends."""
    from workers.contact_checks import queue_checks

    # Its own client: the rate limiter's connection belongs to this request's event loop.
    limiter_redis = aioredis.Redis.from_url(runtime.redis_url)
    try:
        checker = make_checker(runtime, limiter_redis)
        out, tally = await checker.check(
            body.contacts,
            blocking=body.blocking,
            force_check=body.force_check,
            queue=queue_checks,
        )
    finally:
        await limiter_redis.aclose()
    await run_in_threadpool(_record, client, tally)
    return out


def _record(client: redis.Redis, tally: Counter[tuple[str, bool]]) -> None:
    with contextlib.suppress(redis.RedisError):  # metrics never fail a check
        SyncTelemetry(client).record_contact_checks(tally)


@router.post("/contacts/bulk", response_model=BulkReport)
def bulk(body: BulkBody, engine: EngineDep) -> BulkReport:
    """One operation on up to 10,000 people; SUCCESS / NOT_FOUND / FAILURE (with a message)
    per item, in input order (seed 003). One bad item never fails the call."""
    return registry.bulk(engine, body.operation, body.contacts, body.reason)


@router.get("/contacts/{phone}", response_model=PersonOut, responses=_REFUSED)
def get_contact(phone: PhonePath, engine: EngineDep) -> PersonOut:
    """The person's record and the campaigns it is in (each contact's state). A removed
    record is 404, unless an opt-out stood: that outlives the removal and is shown."""
    return registry.get_person(engine, phone)


@router.post("/contacts/{phone}/block", response_model=PersonOut, responses=_REFUSED)
def block_contact(phone: PhonePath, engine: EngineDep, body: BlockBody | None = None) -> PersonOut:
    """BLOCKED: refused at upload (invalid_record `blocked`) and at send time."""
    return registry.block(engine, phone, body.reason if body else None)


@router.post("/contacts/{phone}/unblock", response_model=PersonOut, responses=_REFUSED)
def unblock_contact(phone: PhonePath, engine: EngineDep) -> PersonOut:
    return registry.unblock(engine, phone)


@router.post("/contacts/{phone}/opt-in", response_model=PersonOut, responses=_REFUSED)
def opt_in_contact(
    phone: PhonePath, engine: EngineDep, body: SourceBody | None = None
) -> PersonOut:
    """The person's own opt-in: it also clears any opt-out."""
    return registry.opt_in(engine, phone, body.source if body else None)


@router.post("/contacts/{phone}/opt-out", response_model=PersonOut, responses=_REFUSED)
def opt_out_contact(
    phone: PhonePath, engine: EngineDep, body: SourceBody | None = None
) -> PersonOut:
    return registry.opt_out(engine, phone, body.source if body else None)


@router.delete("/contacts/{phone}", response_model=RemovedOut, responses=_REFUSED)
def remove_contact(phone: PhonePath, engine: EngineDep) -> RemovedOut:
    """Removes the record with its UNAVAILABLE or BLOCKED status (seed 000); an opt-out
    stays (only the person's own opt-in clears it)."""
    return registry.remove(engine, phone)


@router.get("/campaigns/{campaign_id}/suppressed", response_model=SuppressedOut)
def suppressed(campaign_id: CampaignId, engine: EngineDep) -> SuppressedOut:
    """The campaign's contacts the registry refused, counted by reason."""
    return registry.suppressed(engine, campaign_id)
