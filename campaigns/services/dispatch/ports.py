"""What dispatch needs of the network, as small ports.

The Celery adapter fills them with Redis (``campaigns.clients.send_gate``: ``RedisSendGate``,
``ChainKeys``, ``WakeListener``) and the Cloud API client
(``campaigns.clients.whatsapp.CloudApiTransport``); unit tests with in-memory fakes. So the
dispatch use cases stay free of Celery and HTTP libraries.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from campaigns.domain.dispatch import (
    Attempt,
    CampaignPlan,
    GroupGrant,
    SendJob,
    Starts,
    TierRoom,
)
from campaigns.domain.outcomes import Decision, SendResult


class MessageTransport(Protocol):
    async def send(self, job: SendJob) -> SendResult: ...


class SendGate(Protocol):
    """Redis side of a send: pacing (the campaign's bucket and its sender's), pause flags,
    and the sender's messaging tier (``messaging_limit`` unique recipients per
    ``tier_window_s``; 0: unlimited, and then no tier call is made at all). Nothing here
    decides what may leave: that is the send ledger's start statement (Postgres)."""

    @property
    def messaging_limit(self) -> int: ...

    @property
    def tier_window_s(self) -> float: ...

    async def open_group(
        self,
        campaign_id: int,
        sender_id: str,
        rate: float,
        count: int,
        recipients: Sequence[str] = (),
    ) -> GroupGrant:
        """Books ``count`` tokens at the campaign's pacing ``rate`` (and the sender's limit)
        and waits for the first; then checks the pause flag (see ``GroupGrant``). With a
        messaging limit, ``recipients`` (E.164, one per token) pass the sender's tier in that
        same step."""
        ...

    async def tier_room(self, sender_id: str) -> TierRoom:
        """The sender's tier headroom (called only with a messaging limit)."""
        ...

    async def is_paused(self, campaign_id: int) -> bool: ...

    async def pause(self, campaign_id: int) -> None: ...

    async def slow_down(self, sender_id: str, seconds: float) -> None: ...


class ChainKeyStore(Protocol):
    """One chain per (campaign, slot) across every dispatcher (``ChainKeys``)."""

    async def try_take(self, campaign_id: int, slot: int) -> bool: ...

    async def renew(self, chains: Sequence[tuple[int, int]]) -> list[bool]: ...

    async def release(self, campaign_id: int, slot: int) -> None: ...


class Wakeup(Protocol):
    """A bounded wait that start/resume can cut short (``WakeListener``)."""

    async def wait(self, timeout_s: float) -> bool: ...


class Starter(Protocol):
    """The send ledger's start statement (``ledger.StartLedger``)."""

    async def start(self, attempts: Sequence[tuple[int, uuid.UUID]]) -> Starts:
        """Marks (contact id, attempt id) pairs started (durably), or ends those whose person
        the registry refuses now Sending failed (``Starts``). Raises when it could not tell
        (then none may be sent)."""
        ...


class OutcomeSink(Protocol):
    """Where answers and releases go as they happen (``recorder.Recorder``)."""

    def add(self, plan: CampaignPlan, attempt: Attempt) -> None: ...

    def halted(self, campaign_id: int) -> bool:
        """The campaign's chains must stop (paused, cancelled, stopped by its answers)."""
        ...

    def note_answer(self, plan: CampaignPlan, decision: Decision, result: SendResult) -> bool:
        """Counts an answer; True when it stops the campaign now (raise the pause flag)."""
        ...
