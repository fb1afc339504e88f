"""Contacts check tasks (dispatch queue): thin adapters around
``campaigns.services.contact_checks``.

``resolve_checks``: the numbers a ``no_wait`` check answered ``processing``, asked with
``blocking: wait``; a repeated ``POST /contacts/check`` then finds them in the registry.
``check_campaign``: a ``--check-contacts`` campaign's check, a few seconds per task, then
the next task carries on after the last contact it checked; queued by the dispatch tick
while the campaign waits for it (one at a time per campaign).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import redis
import redis.asyncio as aioredis
from celery import shared_task

from campaigns.clients import redis_keys
from campaigns.clients.telemetry import SyncTelemetry
from campaigns.domain.registry import Suppression
from campaigns.runtime.contact_checks import make_checker
from campaigns.runtime.stores import resolve
from campaigns.services import contact_checks

log = logging.getLogger(__name__)

PENDING_TTL_S = 300  # a queued no_wait check is not queued again for this long
CAMPAIGN_LOCK_TTL_S = 60  # a campaign's check task refreshes it; a dead one lets go
CAMPAIGN_STEP_S = 10.0


def _record(tally: Counter[tuple[str, bool]] | None, not_on_whatsapp: int = 0) -> None:
    if not tally and not not_on_whatsapp:
        return
    try:
        telemetry = SyncTelemetry(redis.Redis.from_url(resolve().redis_url))
        telemetry.record_contact_checks(tally or {})
        telemetry.record_suppressed({Suppression.NOT_ON_WHATSAPP.value: not_on_whatsapp})
    except redis.RedisError:  # metrics never fail a check
        log.warning("could not record contacts check metrics", exc_info=True)


def queue_checks(numbers: list[str], force_check: bool) -> list[str]:
    """Queues one ``resolve_checks`` for the numbers not already queued; returns those."""
    if not numbers:
        return []
    client = redis.Redis.from_url(resolve().redis_url)
    try:
        fresh = [
            n
            for n in numbers
            if client.set(redis_keys.check_pending(n), 1, nx=True, ex=PENDING_TTL_S)
        ]
    except redis.RedisError:
        fresh = list(numbers)
    finally:
        client.close()
    if fresh:
        resolve_checks.delay(fresh, force_check)
    return fresh


@shared_task(name="workers.contact_checks.resolve_checks", acks_late=True)
def resolve_checks(numbers: list[str], force_check: bool = False) -> None:
    runtime = resolve()

    async def run() -> None:
        client = aioredis.Redis.from_url(runtime.redis_url)
        try:
            checker = make_checker(runtime, client)
            answers = await checker.ask(numbers, force_check=force_check)
            _record(Counter((a.status.value, False) for a in answers.values()))
        finally:
            await client.delete(*(redis_keys.check_pending(n) for n in numbers))
            await client.aclose()

    asyncio.run(run())


def start_campaign_checks() -> list[int]:
    """Queues the check of every running campaign that waits for one (tick)."""
    runtime = resolve()
    started = []
    client = redis.Redis.from_url(runtime.redis_url)
    try:
        for campaign_id in contact_checks.campaigns_awaiting_check(runtime.engine):
            key = redis_keys.check_campaign(campaign_id)
            if client.set(key, 1, nx=True, ex=CAMPAIGN_LOCK_TTL_S):
                check_campaign.delay(campaign_id, 0)
                started.append(campaign_id)
    finally:
        client.close()
    return started


@shared_task(name="workers.contact_checks.check_campaign", acks_late=True)
def check_campaign(campaign_id: int, after_id: int = 0) -> None:
    runtime = resolve()
    settings = runtime.settings
    sender = contact_checks.sender_of(
        runtime.engine, campaign_id, settings.whatsapp_phone_number_id or "default"
    )

    async def run() -> contact_checks.CampaignCheckStep:
        client = aioredis.Redis.from_url(runtime.redis_url)
        try:
            await client.expire(redis_keys.check_campaign(campaign_id), CAMPAIGN_LOCK_TTL_S)
            return await contact_checks.check_campaign(
                make_checker(runtime, client),
                campaign_id,
                after_id=after_id,
                budget_s=CAMPAIGN_STEP_S,
                sender_id=sender,
                clock=time.monotonic,
            )
        finally:
            await client.aclose()

    step = asyncio.run(run())
    _record(step.tally, step.not_on_whatsapp)
    if step.not_on_whatsapp:
        log.info("campaign %s: %d contacts not on WhatsApp", campaign_id, step.not_on_whatsapp)
    if step.more:
        check_campaign.delay(campaign_id, step.after_id)
        return
    client = redis.Redis.from_url(runtime.redis_url)
    try:
        client.delete(redis_keys.check_campaign(campaign_id))
    finally:
        client.close()
    from workers.dispatch import wake_dispatch

    wake_dispatch()
