"""Dispatch tasks: thin adapters that give campaigns.dispatch its Redis and HTTP ports.

A task carries ids only and claims its own work from Postgres, so a lost or duplicated task
message costs nothing. Each worker thread keeps one event loop with its HTTP pool and Redis
connections across tasks (connections stay warm between batches).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import redis
import redis.asyncio as aioredis
from celery import shared_task

from campaigns import dispatch
from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.clients.send_gate import DispatchLoops, RedisSendGate
from campaigns.clients.telemetry import Telemetry
from campaigns.clients.whatsapp import CloudApiTransport, WhatsAppClient
from campaigns.runtime import resolve

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


def _context() -> _LoopContext:
    ctx: _LoopContext | None = getattr(_local, "ctx", None)
    if ctx is not None:
        return ctx
    runtime = resolve()
    settings = runtime.settings
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = aioredis.Redis.from_url(runtime.redis_url)
    gate = RedisSendGate(client, RateLimiter(client), PauseFlags(client))
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
def send_batch(campaign_id: int, slot: int) -> None:
    """One batch of one campaign, then the next batch of this chain if more is due now."""
    runtime = resolve()
    settings = runtime.settings
    ctx = _context()
    loops = DispatchLoops(ctx.sync_redis, ttl_s=settings.dispatch_loop_ttl_s)
    loops.refresh(campaign_id, slot)
    limiter_before = (ctx.gate.limiter.stats.waits, ctx.gate.limiter.stats.waited_s)
    report = dispatch.run_batch(
        runtime.engine,
        campaign_id,
        ctx.gate,
        ctx.transport,
        ctx.run,
        default_sender=settings.whatsapp_phone_number_id,
        lease_margin_s=settings.dispatch_lease_margin_s,
        concurrency=settings.dispatch_concurrency,
    )
    if report.claimed:
        stats = ctx.gate.limiter.stats
        ctx.run(
            ctx.telemetry.record_send_batch(
                campaign_id=campaign_id,
                outcomes=report.outcomes,
                error_codes=report.error_codes,
                latencies_s=report.latencies_s,
                accepted_at=report.accepted_at,
                limiter_waits=stats.waits - limiter_before[0],
                limiter_wait_s=stats.waited_s - limiter_before[1],
            )
        )
    if report.paused_reason:
        log.warning("campaign %s %s", campaign_id, report.paused_reason)
    if report.more:
        send_batch.apply_async((campaign_id, slot))
    else:
        loops.release(campaign_id, slot)
