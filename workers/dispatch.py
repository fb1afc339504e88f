"""Dispatch tasks: thin adapters that give campaigns.services.dispatch its Redis and HTTP ports.

A task carries ids only and claims its own work from Postgres, so a lost or duplicated task
message costs nothing. A task runs a few seconds of batches (claim and record overlapped
with sending, see ``campaigns.services.dispatch.run_chain``) and then re-enqueues itself. Each
worker thread keeps one event loop with its HTTP pool and Redis connections across tasks
(connections stay warm between batches).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import redis
import redis.asyncio as aioredis
from celery import shared_task

from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.clients.send_gate import DispatchLoops, RedisSendGate, tier_blocked
from campaigns.clients.telemetry import Telemetry
from campaigns.clients.whatsapp import CloudApiTransport, WhatsAppClient
from campaigns.domain import dispatch as rules
from campaigns.runtime.stores import resolve
from campaigns.services import dispatch

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _LoopContext:
    loop: asyncio.AbstractEventLoop
    gate: RedisSendGate
    transport: CloudApiTransport
    telemetry: Telemetry
    sync_redis: redis.Redis

    def run(self, awaitable: Awaitable[T]) -> T:
        async def _await() -> T:
            return await awaitable

        return self.loop.run_until_complete(_await())


_local = threading.local()
_rng = random.Random()  # timing spread only


def _context() -> _LoopContext:
    ctx: _LoopContext | None = getattr(_local, "ctx", None)
    if ctx is not None:
        return ctx
    runtime = resolve()
    settings = runtime.settings
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = aioredis.Redis.from_url(runtime.redis_url)
    gate = RedisSendGate(
        client,
        RateLimiter(client),
        PauseFlags(client),
        messaging_limit=settings.whatsapp_messaging_limit,
    )
    transport = CloudApiTransport(
        WhatsAppClient(
            timeout_s=settings.whatsapp_timeout_s, max_connections=settings.dispatch_concurrency
        ),
        base_url=settings.whatsapp_api_url,
        api_version=settings.whatsapp_api_version,
        token=settings.whatsapp_token.get_secret_value(),
    )
    ctx = _LoopContext(
        loop, gate, transport, Telemetry(client), redis.Redis.from_url(runtime.redis_url)
    )
    _local.ctx = ctx
    return ctx


@shared_task(name="workers.dispatch.send_batch", acks_late=True)
def send_batch(campaign_id: int, slot: int, sender_id: str | None = None) -> None:
    """Batches of one campaign for a few seconds (``dispatch.run_chain``), then the next task
    of this chain if more is due now. ``sender_id`` (given with a messaging limit): a chain
    whose sender's tier is blocked ends at once, before any database work."""
    runtime = resolve()
    settings = runtime.settings
    ctx = _context()
    loops = DispatchLoops(ctx.sync_redis, ttl_s=settings.dispatch_loop_ttl_s)
    if (
        sender_id is not None
        and settings.whatsapp_messaging_limit
        and tier_blocked(ctx.sync_redis, sender_id)
    ):
        loops.release(campaign_id, slot)
        return
    loops.refresh(campaign_id, slot)
    stats = ctx.gate.limiter.stats
    seen = (stats.waits, stats.waited_s)

    async def after_batch(report: dispatch.BatchReport) -> None:
        loops.refresh(campaign_id, slot)
        nonlocal seen
        waits, waited_s = stats.waits - seen[0], stats.waited_s - seen[1]
        seen = (stats.waits, stats.waited_s)
        if report.claimed:
            await ctx.telemetry.record_send_batch(
                campaign_id=campaign_id,
                outcomes=report.outcomes,
                error_codes=report.error_codes,
                latencies_s=report.latencies_s,
                accepted_at=report.accepted_at,
                limiter_waits=waits,
                limiter_wait_s=waited_s,
            )
        if report.paused_reason:
            log.warning("campaign %s %s", campaign_id, report.paused_reason)

    more = ctx.run(
        dispatch.run_chain(
            runtime.engine,
            campaign_id,
            ctx.gate,
            ctx.transport,
            default_sender=settings.whatsapp_phone_number_id,
            lease_margin_s=settings.dispatch_lease_margin_s,
            concurrency=settings.dispatch_concurrency,
            # Well inside the chain key's TTL (each batch refreshes it anyway); spread so
            # that parallel chains do not all pause for their next task at the same moment.
            max_s=min(rules.CHAIN_S, settings.dispatch_loop_ttl_s / 3) * _rng.uniform(0.5, 1),
            after_batch=after_batch,
        )
    )
    if more:
        send_batch.apply_async(
            (campaign_id, slot) if sender_id is None else (campaign_id, slot, sender_id)
        )
    else:
        loops.release(campaign_id, slot)
