"""The beat tick: scheduled starts, batch chains for running campaigns, lease recovery,
completion. Idempotent and cheap when idle; any number of ticks may overlap safely."""

from __future__ import annotations

import logging

import redis
from celery import shared_task

from campaigns.clients.send_gate import (
    DispatchLoops,
    markers_since,
    started_attempts,
    tier_blocked,
)
from campaigns.domain import dispatch as rules
from campaigns.runtime.stores import resolve
from campaigns.services import dispatch
from workers.dispatch import send_batch

log = logging.getLogger(__name__)


@shared_task(name="workers.maintenance.tick", acks_late=True, ignore_result=True)
def tick() -> None:
    runtime = resolve()
    settings = runtime.settings
    engine = runtime.engine
    client = redis.Redis.from_url(runtime.redis_url)
    try:
        for campaign_id in dispatch.start_due_scheduled(engine):
            log.info("campaign %s started on schedule", campaign_id)
        recovery = dispatch.recover_expired_leases(
            engine,
            lambda attempts: started_attempts(client, attempts),
            grace_s=settings.outcome_unknown_grace_s,
            markers_since=lambda: markers_since(client),
        )
        if recovery.released or recovery.errored:
            log.warning(
                "expired leases: %d released unsent, %d outcome unknown",
                recovery.released,
                recovery.errored,
            )
        loops = DispatchLoops(client, ttl_s=settings.dispatch_loop_ttl_s)
        for campaign_id in dispatch.campaigns_with_due_work(engine):
            plan: rules.CampaignPlan | None = None
            if settings.whatsapp_messaging_limit:
                plan = dispatch.load_plan(engine, campaign_id, settings.whatsapp_phone_number_id)
                if plan is None or tier_blocked(client, plan.sender_id):
                    continue  # its sender's tier is full: no chain until the window frees up
            for slot in range(settings.dispatch_parallel_batches):
                if loops.try_take(campaign_id, slot):
                    if plan is not None:  # with a messaging limit
                        send_batch.apply_async((campaign_id, slot, plan.sender_id))
                    else:
                        send_batch.apply_async((campaign_id, slot))
        for campaign_id in dispatch.complete_finished(engine):
            log.info("campaign %s completed", campaign_id)
    finally:
        client.close()


def wake_dispatch() -> None:
    """Runs a tick now (after start/resume) instead of at the next beat, up to a second later.

    Best effort: the command has committed already, and beat's own tick follows anyway.
    """
    try:
        tick.apply_async()
    except Exception:  # the broker is down: sending starts with the next beat tick
        log.warning("could not queue a dispatch tick; beat will start the sends", exc_info=True)
