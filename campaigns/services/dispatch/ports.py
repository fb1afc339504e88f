"""What dispatch needs of the network, as two small ports.

The Celery adapter fills them with Redis (``campaigns.clients.send_gate.RedisSendGate``) and
the Cloud API client (``campaigns.clients.whatsapp.CloudApiTransport``); unit tests with
in-memory fakes. So the dispatch use cases stay free of Celery and HTTP libraries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from campaigns.domain.dispatch import GroupGrant, SendJob, TierRoom
from campaigns.domain.outcomes import SendResult


class MessageTransport(Protocol):
    async def send(self, job: SendJob) -> SendResult: ...


class SendGate(Protocol):
    """Redis side of a send: the shared token bucket, pause flags, started markers, and the
    sender's messaging tier (``messaging_limit`` unique recipients per ``tier_window_s``;
    0: unlimited, and then no tier call is made at all)."""

    @property
    def messaging_limit(self) -> int: ...

    @property
    def tier_window_s(self) -> float: ...

    async def open_group(
        self,
        campaign_id: int,
        sender_id: str,
        rate: float,
        attempts: Sequence[str],
        recipients: Sequence[str] = (),
    ) -> GroupGrant:
        """Books a token per attempt and waits for the first; then, unless the campaign is
        paused, marks them all started in one step (see ``GroupGrant``). With a messaging
        limit, ``recipients`` (E.164, one per attempt) pass the sender's tier in that same
        step: only admitted ones are marked and count against it."""
        ...

    async def tier_room(self, sender_id: str) -> TierRoom:
        """The sender's tier headroom (called only with a messaging limit)."""
        ...

    async def unmark(self, attempts: Sequence[str]) -> None:
        """Drops the started markers of attempts that were marked but provably not sent."""
        ...

    async def is_paused(self, campaign_id: int) -> bool: ...

    async def pause(self, campaign_id: int) -> None: ...

    async def slow_down(self, sender_id: str, seconds: float) -> None: ...
