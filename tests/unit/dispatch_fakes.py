"""In-memory stand-ins for dispatch's ports (``SendGate``, ``MessageTransport``, ``Starter``,
``OutcomeSink``): unit tests drive ``campaigns.services.dispatch.send.Sender`` with them,
without Redis, Postgres or HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from campaigns.domain.dispatch import (
    Attempt,
    CampaignPlan,
    ClaimedContact,
    GroupGrant,
    SendJob,
    Starts,
    TierRoom,
)
from campaigns.domain.outcomes import Decision, SendResult
from campaigns.domain.send_window import SendWindow
from campaigns.domain.states import CampaignStatus, ContactState


class RecordingGate:
    """Lets every group through at once; remembers each group's size and its rates."""

    messaging_limit = 0
    tier_window_s = 86_400.0

    def __init__(self) -> None:
        self.groups: list[int] = []
        self.rates: list[float] = []

    async def open_group(
        self,
        campaign_id: int,
        sender_id: str,
        rate: float,
        count: int,
        recipients: Sequence[str] = (),
    ) -> GroupGrant:
        self.groups.append(count)
        self.rates.append(rate)
        now = asyncio.get_running_loop().time()
        return GroupGrant(go=True, due_at=tuple(now for _ in range(count)))

    async def tier_room(self, sender_id: str) -> TierRoom:
        return TierRoom(room=0)

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


class StartAll:
    """The start statement of a ledger that lets every attempt go (or none: ``refuse``)."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.started: list[int] = []

    async def start(self, attempts: Sequence[tuple[int, uuid.UUID]]) -> Starts:
        if self.refuse:
            return Starts()
        ids = {i for i, _ in attempts}
        self.started.extend(sorted(ids))
        return Starts(frozenset(ids))


class Collect:
    """An outcome sink keeping every attempt in arrival order (no recorder, no database)."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.stopped: set[int] = set()

    def add(self, plan: CampaignPlan, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def halted(self, campaign_id: int) -> bool:
        return campaign_id in self.stopped

    def note_answer(self, plan: CampaignPlan, decision: Decision, result: SendResult) -> bool:
        if decision.pause_campaign and plan.id not in self.stopped:
            self.stopped.add(plan.id)
            return True
        return False

    def by_contact(self, claimed: Sequence[ClaimedContact]) -> list[Attempt]:
        """The attempts in the order of ``claimed``."""
        found = {a.contact.id: a for a in self.attempts}
        return [found[c.id] for c in claimed]


def send(
    p: CampaignPlan,
    claimed: Sequence[ClaimedContact],
    gate: RecordingGate,
    transport: AcceptAll,
    *,
    concurrency: int = 200,
    ledger: StartAll | None = None,
) -> tuple[list[Attempt], bool]:
    """One batch through the production ``Sender`` with these fakes, every send finished:
    (each contact's attempt in claim order, whether the batch stopped)."""
    from campaigns.services.dispatch.send import Sender

    sink = Collect()

    async def main() -> bool:
        sender = Sender(p, gate, transport, ledger or StartAll(), sink, concurrency=concurrency)
        stopped = await sender.send_batch(claimed)
        await sender.finish()
        return stopped

    stopped = asyncio.run(main())
    return sink.by_contact(claimed), stopped
