"""In-memory stand-ins for dispatch's ports (``SendGate``, ``MessageTransport``): unit tests
drive ``campaigns.services.dispatch.send.send_claimed`` with them, without Redis or HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from campaigns.domain.dispatch import CampaignPlan, ClaimedContact, GroupGrant, SendJob, TierRoom
from campaigns.domain.outcomes import SendResult
from campaigns.domain.send_window import SendWindow
from campaigns.domain.states import CampaignStatus, ContactState


class RecordingGate:
    """Lets every group through at once; remembers each group's size and its attempts."""

    messaging_limit = 0
    tier_window_s = 86_400.0

    def __init__(self) -> None:
        self.groups: list[int] = []
        self.attempts: list[str] = []

    async def open_group(
        self,
        campaign_id: int,
        sender_id: str,
        rate: float,
        attempts: Sequence[str],
        recipients: Sequence[str] = (),
    ) -> GroupGrant:
        self.groups.append(len(attempts))
        self.attempts.extend(attempts)
        now = asyncio.get_running_loop().time()
        return GroupGrant(go=True, due_at=tuple(now for _ in attempts))

    async def tier_room(self, sender_id: str) -> TierRoom:
        return TierRoom(room=0)

    async def unmark(self, attempts: Sequence[str]) -> None:
        return None

    async def is_paused(self, campaign_id: int) -> bool:
        return False

    async def pause(self, campaign_id: int) -> None:
        return None

    async def slow_down(self, sender_id: str, seconds: float) -> None:
        return None


class AcceptAll:
    """The platform accepting every send; ``sent`` lists the recipients in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, job: SendJob) -> SendResult:
        self.sent.append(job.to_e164)
        return SendResult(http_status=200, wamid=f"wamid.{job.to_e164}")


def plan(rate_per_s: float = 1000.0, window: SendWindow | None = None) -> CampaignPlan:
    return CampaignPlan(
        id=1,
        status=CampaignStatus.RUNNING,
        template="t",
        language="en",
        body_variables=(),
        sender_id="s",
        rate_per_s=rate_per_s,
        max_attempts=5,
        window=window,
    )


def claimed(*phones: str) -> list[ClaimedContact]:
    """First attempts of Initial contacts with these numbers."""
    return [
        ClaimedContact(i, ContactState.INITIAL, p, {}, 1, uuid.uuid4())
        for i, p in enumerate(phones)
    ]


def contacts(n: int) -> list[ClaimedContact]:
    """``n`` claimed contacts with distinct German mobile numbers."""
    return claimed(*(f"+49151{i:08d}" for i in range(n)))
