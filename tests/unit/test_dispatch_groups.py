"""How a batch passes the gate in groups (campaigns.dispatch.send_claimed), without I/O."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from campaigns import dispatch
from campaigns.dispatch import CampaignPlan, GroupGrant, SendJob, TierRoom
from campaigns.outcomes import SendResult
from campaigns.states import CampaignStatus
from campaigns.storage.dispatch_repo import ClaimedContact


class CountingGate:
    """Lets every group through at once and remembers each group's size."""

    messaging_limit = 0
    tier_window_s = 86_400.0

    def __init__(self) -> None:
        self.groups: list[int] = []

    async def open_group(
        self,
        campaign_id: int,
        sender_id: str,
        rate: float,
        attempts: Sequence[str],
        recipients: Sequence[str] = (),
    ) -> GroupGrant:
        self.groups.append(len(attempts))
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


class Accepting:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, job: SendJob) -> SendResult:
        self.sent.append(job.to_e164)
        return SendResult(http_status=200, wamid=f"wamid.{job.to_e164}")


def plan(rate_per_s: float) -> CampaignPlan:
    return CampaignPlan(
        id=1,
        status=CampaignStatus.RUNNING,
        template="t",
        language="en",
        body_variables=(),
        sender_id="s",
        rate_per_s=rate_per_s,
        max_attempts=5,
    )


def contacts(n: int) -> list[ClaimedContact]:
    return [
        ClaimedContact(i, dispatch.C.INITIAL, f"+49151{i:08d}", {}, 1, uuid.uuid4())
        for i in range(n)
    ]


def test_groups_are_about_50_ms_of_sending() -> None:
    gate, transport = CountingGate(), Accepting()
    asyncio.run(dispatch.send_claimed(plan(1000.0), contacts(120), gate, transport))
    assert gate.groups == [50, 50, 20]
    assert len(transport.sent) == 120


def test_a_group_is_never_larger_than_the_concurrency_limit() -> None:
    # 4,000 msg/s makes groups of 200: with 20 sends in flight at most, a group of 200 would
    # wait forever for slots it can never get (the capacity benchmark hung on this).
    gate, transport = CountingGate(), Accepting()
    attempts = asyncio.run(
        asyncio.wait_for(
            dispatch.send_claimed(plan(4000.0), contacts(50), gate, transport, concurrency=20),
            timeout=10,
        )
    )
    assert gate.groups == [20, 20, 10]
    assert sorted(transport.sent) == sorted(c.phone_e164 for c in contacts(50))
    assert all(a.result is not None and a.result.wamid for a in attempts)
