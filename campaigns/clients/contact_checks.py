"""The contacts endpoint of the on-premises / BSP WhatsApp Business API (seeds 002, 004):
``POST {WHATSAPP_CONTACTS_URL}/v1/contacts``, and the per-sender rate of checks.

The Cloud API has no such endpoint; a deployment without ``WHATSAPP_CONTACTS_URL`` answers
checks from the registry instead (``campaigns.services.contact_checks``). Requests are few
and small (a list of numbers), so httpx's own pool is enough here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from campaigns.clients import redis_keys
from campaigns.clients.ratelimit import RateLimiter

__all__ = ["CheckRate", "ContactsClient", "ContactsUnavailable"]


class ContactsUnavailable(Exception):
    """The provider could not be asked or gave no readable answer; nothing is cached."""


class ContactsClient:
    """One ``/v1/contacts`` call per :meth:`check`; answers keyed by the input sent."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/v1/contacts"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout_s
        self._transport = transport

    async def check(
        self, numbers: Sequence[str], *, force_check: bool = False
    ) -> dict[str, Mapping[str, Any]]:
        """Checks ``numbers`` (E.164, sent with their +, as seed 004 recommends) with
        ``blocking: wait``; input -> the provider's item (``status``, ``wa_id``)."""
        if not numbers:
            return {}
        body = {"blocking": "wait", "contacts": list(numbers), "force_check": force_check}
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport
            ) as client:
                response = await client.post(self._url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ContactsUnavailable(f"contacts endpoint unreachable: {exc}") from exc
        if response.status_code != 200:
            raise ContactsUnavailable(
                f"contacts endpoint answered HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            items = response.json()["contacts"]
            return {str(item["input"]): item for item in items if isinstance(item, dict)}
        except (ValueError, KeyError, TypeError) as exc:
            raise ContactsUnavailable("contacts endpoint gave no contacts list") from exc


class CheckRate:
    """Checks per second per sender number (``CONTACT_CHECK_RATE_PER_S``), shared by every
    process through the same Redis token bucket as sends use, on its own key."""

    def __init__(self, limiter: RateLimiter, rate_per_s: float) -> None:
        self._limiter = limiter
        self._rate = rate_per_s

    async def wait(self, sender_id: str, count: int) -> None:
        """Books ``count`` checks of ``sender_id`` and waits until the last is due."""
        if count <= 0:
            return
        booking = await self._limiter.reserve(
            redis_keys.contact_check_sender(sender_id), self._rate, count
        )
        if booking.last_due_s > 0:
            await asyncio.sleep(booking.last_due_s)
