"""Webhook tasks: thin adapters around campaigns.services.webhooks.drain.

Both carry no arguments and claim their own work from the inbox (FOR UPDATE SKIP LOCKED), so
a lost, duplicated or concurrent task costs nothing. ``apply_inbox`` is queued by the
receiver (debounced); ``sweep_inbox`` runs from beat every 2 s and also retries statuses
that matched no contact yet.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import redis
from celery import Task, shared_task

from campaigns.clients.telemetry import SyncTelemetry
from campaigns.domain.webhooks import opt_out_words
from campaigns.runtime.config import Settings
from campaigns.runtime.stores import resolve
from campaigns.services.webhooks import apply as webhooks_apply
from campaigns.services.webhooks import retention as webhook_retention

log = logging.getLogger(__name__)


@cache
def _telemetry(redis_url: str) -> SyncTelemetry:
    return SyncTelemetry(redis.Redis.from_url(redis_url))


def _policy(settings: Settings) -> webhooks_apply.ApplyPolicy:
    return webhooks_apply.ApplyPolicy(
        batch_size=settings.webhook_apply_batch,
        retry_base_s=settings.webhook_retry_base_s,
        max_tries=settings.webhook_retry_max_tries,
        max_age_s=settings.webhook_retry_max_age_s,
        opt_out_words=opt_out_words(settings.opt_out_words),
    )


def _drain(task: Task, *, retries: bool) -> dict[str, Any]:
    runtime = resolve()
    settings = runtime.settings
    stats = webhooks_apply.drain(
        runtime.engine,
        policy=_policy(settings),
        budget_s=settings.webhook_drain_budget_s,
        retries=retries,
    )
    if stats.by_status:
        try:
            _telemetry(runtime.redis_url).record_webhook_events(
                by_status=stats.by_status, lags_s=stats.lags_s
            )
        except redis.RedisError:  # metrics must never fail the apply that already committed
            log.warning("could not record webhook metrics", exc_info=True)
    if stats.more:  # the budget ran out with work left: hand over rather than hog the worker
        # Through the bound task's own app: Celery's current app is per thread.
        task.app.send_task("workers.webhooks.apply_inbox")
    return stats.as_dict()


@shared_task(name="workers.webhooks.apply_inbox", bind=True, acks_late=True)
def apply_inbox(self: Task) -> dict[str, Any]:
    return _drain(self, retries=False)


# A sweep that waited longer than a few beats is superseded by the next one.
@shared_task(name="workers.webhooks.sweep_inbox", bind=True, acks_late=True, expires=10)
def sweep_inbox(self: Task) -> dict[str, Any]:
    return _drain(self, retries=True)


@shared_task(name="workers.webhooks.prune_inbox", acks_late=True, expires=60)
def prune_inbox() -> int:
    """Applied bodies past WEBHOOK_INBOX_RETENTION_H go (beat, every minute)."""
    settings = resolve().settings
    if settings.webhook_inbox_retention_h <= 0:
        return 0
    return webhook_retention.prune_inbox(
        resolve().engine, retention_s=settings.webhook_inbox_retention_h * 3600
    )
