"""Builds the contacts check (``campaigns.services.contact_checks.Checker``) from the
settings: the provider client when ``WHATSAPP_CONTACTS_URL`` is set, the per-sender rate on
Redis; the API and the workers build it the same way."""

from __future__ import annotations

import redis.asyncio as aioredis

from campaigns.clients.contact_checks import CheckRate, ContactsClient
from campaigns.clients.ratelimit import RateLimiter
from campaigns.runtime.stores import Runtime
from campaigns.services.contact_checks import Checker


def make_checker(runtime: Runtime, client: aioredis.Redis) -> Checker:
    """``client``: an asyncio Redis client of the caller's event loop (the rate limiter)."""
    settings = runtime.settings
    provider = None
    rate = None
    if settings.whatsapp_contacts_url:
        provider = ContactsClient(
            settings.whatsapp_contacts_url,
            settings.contacts_token(),
            timeout_s=max(30.0, settings.whatsapp_timeout_s),
        )
        rate = CheckRate(RateLimiter(client), settings.contact_check_rate_per_s)
    return Checker(
        engine=runtime.engine,
        ttl_h=settings.contact_check_ttl_h,
        sender_id=settings.whatsapp_phone_number_id or "default",
        client=provider,
        rate=rate,
    )
