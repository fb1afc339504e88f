"""The dispatch queue's tasks and the per-process dispatcher: thin adapters that give
campaigns.services.dispatch its Redis and HTTP ports.

``tick`` (beat, every second): scheduled starts, lease recovery, completion; idempotent and
cheap when idle, any number may overlap safely. The sending itself runs in one dispatcher
per dispatch worker process (``start_dispatcher``: a thread with one event loop serving every
running campaign's chains, see ``campaigns.services.dispatch.dispatcher``), started when the
process starts and woken at once by start/resume (``wake_dispatch``) through Redis. No
Celery task holds a worker slot while a campaign sends or waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from functools import partial

import redis
import redis.asyncio as aioredis
import uvloop
from celery import shared_task

from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.clients.send_gate import (
    ChainKeys,
    RedisSendGate,
    WakeListener,
    publish_wake,
    tier_blocked,
)
from campaigns.clients.telemetry import Telemetry
from campaigns.clients.whatsapp import CloudApiTransport, WhatsAppClient
from campaigns.runtime.stores import resolve
from campaigns.services.dispatch.batch import BatchReport
from campaigns.services.dispatch.dispatcher import Dispatcher, DispatcherConfig
from campaigns.services.dispatch.recovery import recover_expired_leases
from campaigns.services.dispatch.tick import complete_finished, start_due_scheduled
from workers.contact_checks import start_campaign_checks

log = logging.getLogger(__name__)


@dataclass
class _Running:
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event


_running: _Running | None = None


def start_dispatcher(preferred_slot: int = 0) -> None:
    """Starts this process's dispatcher thread (once per process)."""
    global _running
    if _running is not None and _running.thread.is_alive():
        return
    # uvloop: the pure-Python selector loop cost ~50 of the worker's ~600 us per message
    # (py-spy); psycopg's async connection, redis.asyncio and the http1 client all run on it.
    loop = uvloop.new_event_loop()
    stop = asyncio.Event()  # bound to the loop that first waits on it (the thread's)

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_serve(stop, preferred_slot))
        except Exception:
            log.exception("the dispatcher stopped on an error")
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="dispatcher", daemon=True)
    thread.start()
    _running = _Running(thread, loop, stop)
    log.info("dispatcher started (preferred slot %d)", preferred_slot)


def stop_dispatcher(timeout_s: float) -> None:
    """Stops opening groups, waits for the answers in flight and records them (a warm
    shutdown: nothing it started is left to lease recovery)."""
    running = _running
    if running is None or not running.thread.is_alive():
        return
    running.loop.call_soon_threadsafe(running.stop.set)
    running.thread.join(timeout_s)


async def _serve(stop: asyncio.Event, preferred_slot: int) -> None:
    runtime = resolve()
    settings = runtime.settings
    client = aioredis.Redis.from_url(runtime.redis_url)
    gate = RedisSendGate(
        client,
        RateLimiter(client),
        PauseFlags(client),
        messaging_limit=settings.whatsapp_messaging_limit,
        sender_max_rate_per_s=settings.sender_max_rate_per_s,
    )
    http = WhatsAppClient(
        timeout_s=settings.whatsapp_timeout_s, max_connections=settings.dispatch_concurrency
    )
    transport = CloudApiTransport(
        http,
        base_url=settings.whatsapp_api_url,
        api_version=settings.whatsapp_api_version,
        token=settings.whatsapp_token.get_secret_value(),
    )
    telemetry = _Telemetry(Telemetry(client), gate.limiter)

    config = DispatcherConfig(
        default_sender=settings.whatsapp_phone_number_id,
        parallel=settings.dispatch_parallel_batches,
        preferred_slot=preferred_slot,
        lease_margin_s=settings.dispatch_lease_margin_s,
        concurrency=settings.dispatch_concurrency,
        key_ttl_s=settings.dispatch_loop_ttl_s,
        pause_after=settings.unknown_error_pause_after,
        sender_max_rate_per_s=settings.sender_max_rate_per_s,
    )
    dispatcher = Dispatcher(
        runtime.engine,
        gate,
        transport,
        ChainKeys(client, f"{os.getpid()}:{uuid.uuid4().hex}", ttl_s=config.key_ttl_s),
        WakeListener(client),
        config,
        tier_blocked=partial(tier_blocked, client) if settings.whatsapp_messaging_limit else None,
        on_report=telemetry,
    )
    try:
        await dispatcher.run(stop)
    finally:
        await http.aclose()
        await client.aclose()


class _Telemetry:
    """Per recorded flush and campaign: the outcomes, with the rate limiter's waits since
    the last report, to telemetry."""

    def __init__(self, telemetry: Telemetry, limiter: RateLimiter) -> None:
        self.telemetry = telemetry
        self.stats = limiter.stats
        self.seen = (self.stats.waits, self.stats.waited_s)

    async def __call__(self, report: BatchReport) -> None:
        waits = self.stats.waits - self.seen[0]
        waited_s = self.stats.waited_s - self.seen[1]
        self.seen = (self.stats.waits, self.stats.waited_s)
        if report.claimed:
            try:
                await self.telemetry.record_send_batch(
                    campaign_id=report.campaign_id,
                    outcomes=report.outcomes,
                    error_codes=report.error_codes,
                    latencies_s=report.latencies_s,
                    accepted_at=report.accepted_at,
                    limiter_waits=waits,
                    limiter_wait_s=waited_s,
                    suppressed=report.suppressed,
                )
            except Exception:  # metrics never stop sending
                log.warning("telemetry not recorded", exc_info=True)
        if report.paused_reason:
            log.warning("campaign %s %s", report.campaign_id, report.paused_reason)


@shared_task(name="workers.dispatch.send_batch", acks_late=True, ignore_result=True)
def send_batch(campaign_id: int, slot: int = 0, sender_id: str | None = None) -> None:
    """Kept for messages queued by an older version: the dispatchers send now; this only
    wakes them."""
    _wake_dispatchers()


@shared_task(name="workers.dispatch.tick", acks_late=True, ignore_result=True)
def tick() -> None:
    runtime = resolve()
    settings = runtime.settings
    engine = runtime.engine
    started = start_due_scheduled(engine)
    for campaign_id in started:
        log.info("campaign %s started on schedule", campaign_id)
    if started:
        _wake_dispatchers()
    recovered = recover_expired_leases(engine, grace_s=settings.outcome_unknown_grace_s)
    if recovered.released or recovered.errored:
        log.warning(
            "expired leases: %d released unsent, %d outcome unknown",
            recovered.released,
            recovered.errored,
        )
    for campaign_id in start_campaign_checks():
        log.info("campaign %s: contacts check started", campaign_id)
    for campaign_id in complete_finished(engine):
        log.info("campaign %s completed", campaign_id)


def _wake_dispatchers() -> None:
    client = redis.Redis.from_url(resolve().redis_url)
    try:
        publish_wake(client)
    except redis.RedisError:  # they refresh on their own within a second
        log.warning("could not wake the dispatchers", exc_info=True)
    finally:
        client.close()


def wake_dispatch() -> None:
    """After start/resume: every dispatcher refreshes now (instead of within a second), and a
    tick runs now. Best effort: the command has committed already."""
    _wake_dispatchers()
    try:
        tick.apply_async()
    except Exception:  # the broker is down: beat's tick follows anyway
        log.warning("could not queue a dispatch tick; beat will run it", exc_info=True)


__all__ = [
    "send_batch",
    "start_dispatcher",
    "stop_dispatcher",
    "tick",
    "wake_dispatch",
]
