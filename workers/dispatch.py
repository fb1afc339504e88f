"""The dispatch queue's tasks: thin adapters that give campaigns.services.dispatch its Redis
and HTTP ports.

``tick`` (beat, every second): scheduled starts, lease recovery, chains for running
campaigns, completion; idempotent and cheap when idle, any number may overlap safely.
``send_batch``: one chain. A task carries ids only and claims its own work from Postgres, so
a lost or duplicated task message costs nothing. A chain runs a few seconds of batches (claim
and record overlapped with sending, see ``campaigns.services.dispatch.chain.run_chain``) and
then re-enqueues itself. Each worker thread keeps one event loop with its HTTP pool and Redis
connections across tasks (connections stay warm between batches).
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
from campaigns.clients.send_gate import (
    DispatchLoops,
    RedisSendGate,
    markers_since,
    started_attempts,
    tier_blocked,
)
from campaigns.clients.telemetry import Telemetry
from campaigns.clients.whatsapp import CloudApiTransport, WhatsAppClient
from campaigns.domain import dispatch as rules
from campaigns.runtime.stores import resolve
from campaigns.services.dispatch.batch import BatchReport
from campaigns.services.dispatch.chain import run_chain
from campaigns.services.dispatch.recovery import recover_expired_leases
from campaigns.services.dispatch.tick import chains_due, complete_finished, start_due_scheduled

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
    """Batches of one campaign for a few seconds (``run_chain``), then the next task
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
    more = ctx.run(
        run_chain(
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
            after_batch=_AfterBatch(ctx, loops, campaign_id, slot),
        )
    )
    if more:
        send_batch.apply_async(_chain_args(campaign_id, slot, sender_id))
    else:
        loops.release(campaign_id, slot)


class _AfterBatch:
    """Per recorded batch: keeps the chain's loop key alive and reports the batch (with the
    rate limiter's waits since the last one) to telemetry."""

    def __init__(
        self, ctx: _LoopContext, loops: DispatchLoops, campaign_id: int, slot: int
    ) -> None:
        self.ctx, self.loops, self.campaign_id, self.slot = ctx, loops, campaign_id, slot
        self.stats = ctx.gate.limiter.stats
        self.seen = (self.stats.waits, self.stats.waited_s)

    async def __call__(self, report: BatchReport) -> None:
        self.loops.refresh(self.campaign_id, self.slot)
        waits = self.stats.waits - self.seen[0]
        waited_s = self.stats.waited_s - self.seen[1]
        self.seen = (self.stats.waits, self.stats.waited_s)
        if report.claimed:
            await self.ctx.telemetry.record_send_batch(
                campaign_id=self.campaign_id,
                outcomes=report.outcomes,
                error_codes=report.error_codes,
                latencies_s=report.latencies_s,
                accepted_at=report.accepted_at,
                limiter_waits=waits,
                limiter_wait_s=waited_s,
            )
        if report.paused_reason:
            log.warning("campaign %s %s", self.campaign_id, report.paused_reason)


@shared_task(name="workers.dispatch.tick", acks_late=True, ignore_result=True)
def tick() -> None:
    runtime = resolve()
    settings = runtime.settings
    engine = runtime.engine
    client = redis.Redis.from_url(runtime.redis_url)
    try:
        for campaign_id in start_due_scheduled(engine):
            log.info("campaign %s started on schedule", campaign_id)
        recovered = recover_expired_leases(
            engine,
            lambda attempts: started_attempts(client, attempts),
            grace_s=settings.outcome_unknown_grace_s,
            markers_since=lambda: markers_since(client),
        )
        if recovered.released or recovered.errored:
            log.warning(
                "expired leases: %d released unsent, %d outcome unknown",
                recovered.released,
                recovered.errored,
            )
        loops = DispatchLoops(client, ttl_s=settings.dispatch_loop_ttl_s)
        due = chains_due(
            engine,
            messaging_limit=settings.whatsapp_messaging_limit,
            default_sender=settings.whatsapp_phone_number_id,
            tier_blocked=lambda sender_id: tier_blocked(client, sender_id),
        )
        for campaign_id, sender_id in due:
            for slot in range(settings.dispatch_parallel_batches):
                if loops.try_take(campaign_id, slot):
                    send_batch.apply_async(_chain_args(campaign_id, slot, sender_id))
        for campaign_id in complete_finished(engine):
            log.info("campaign %s completed", campaign_id)
    finally:
        client.close()


def _chain_args(campaign_id: int, slot: int, sender_id: str | None) -> tuple[object, ...]:
    """``send_batch``'s arguments: the sender only with a messaging limit."""
    return (campaign_id, slot) if sender_id is None else (campaign_id, slot, sender_id)


def wake_dispatch() -> None:
    """Runs a tick now (after start/resume) instead of at the next beat, up to a second later.

    Best effort: the command has committed already, and beat's own tick follows anyway.
    """
    try:
        tick.apply_async()
    except Exception:  # the broker is down: sending starts with the next beat tick
        log.warning("could not queue a dispatch tick; beat will start the sends", exc_info=True)
