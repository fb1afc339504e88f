"""Batches of one campaign back to back, with the database work taken off the sending path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from sqlalchemy import Engine

from campaigns.domain.dispatch import (
    CHAIN_S,
    CampaignPlan,
    ClaimedContact,
    batch_size_for,
    lease_seconds,
    tier_reason,
)
from campaigns.domain.states import CampaignStatus
from campaigns.services.dispatch.batch import BatchReport, claim_batch
from campaigns.services.dispatch.ledger import StartLedger
from campaigns.services.dispatch.plan import load_plan, note_tier_wait, note_window_wait
from campaigns.services.dispatch.ports import MessageTransport, SendGate
from campaigns.services.dispatch.recorder import Recorder
from campaigns.services.dispatch.send import Sender

AfterBatch = Callable[[BatchReport], Awaitable[None]]


async def run_chain(
    engine: Engine,
    campaign_id: int,
    gate: SendGate,
    transport: MessageTransport,
    *,
    default_sender: str,
    lease_margin_s: float = 60.0,
    concurrency: int = 200,
    max_s: float = CHAIN_S,
    after_batch: AfterBatch | None = None,
    recorder: Recorder | None = None,
    ledger: StartLedger | None = None,
    rate: Callable[[CampaignPlan], float] | None = None,
    stopped: Callable[[], bool] | None = None,
    pause_after: int = 20,
) -> bool:
    """Batches of one campaign back to back for up to ``max_s``; True if more is due now.

    Each batch is claimed (the next one in a thread while the current one sends) and sent
    (``send.Sender``): each gate group is started in the send ledger just before it leaves,
    and each answer goes to the recorder as it arrives (written every ~100 ms). The chain
    never waits for a record or a slow answer. Stops at a pause, completion, a short claim
    or the time limit (``max_s`` 0: one batch); a batch claimed ahead is then given back.

    A dispatcher passes its process's ``recorder`` and ``ledger`` (shared by its chains),
    ``rate`` (the campaign's fair share of its sender) and ``stopped`` (the chain's key was
    lost), and does not wait for the last answers. Without a recorder the chain has its own
    and returns once every send is answered and recorded (``after_batch``: each flush's
    report). A full tier or a closed send window stops it and shows the wait.
    """
    plan = await _runnable_plan(engine, campaign_id, gate, default_sender)
    if plan is None:
        return False
    own = recorder is None
    recorder = recorder or _own_recorder(engine, gate, pause_after, after_batch)
    recorder.resume(plan)
    starter = ledger or StartLedger(engine)  # its own: closed at the end
    sender = Sender(
        plan,
        gate,
        transport,
        starter,
        recorder,
        concurrency=concurrency,
        rate=(lambda: rate(plan)) if rate is not None else None,
        stopped=stopped,
    )
    chain = Chain(engine, plan, gate, sender, lease_margin_s=lease_margin_s)
    try:
        more = await chain.run(max_s)
    finally:
        if own:
            await sender.finish()
            await recorder.drain()
        if ledger is None:
            await starter.close()
    await chain.show_waits(more)
    return more and not sender.halted()


def _own_recorder(
    engine: Engine, gate: SendGate, pause_after: int, after_batch: AfterBatch | None
) -> Recorder:
    """A chain's own recorder (no dispatcher's): ``after_batch`` gets each flush's report."""
    return Recorder(
        engine,
        pause_after=pause_after,
        tier_limit=gate.messaging_limit,
        tier_window_s=gate.tier_window_s,
        on_report=after_batch,
    )


async def _runnable_plan(
    engine: Engine, campaign_id: int, gate: SendGate, default_sender: str
) -> CampaignPlan | None:
    """The campaign's plan if it may send now: running, not awaiting its contacts check
    (services.contact_checks), and no pause on its way to Postgres."""
    plan = await asyncio.to_thread(load_plan, engine, campaign_id, default_sender)
    if plan is None or plan.status is not CampaignStatus.RUNNING or plan.awaiting_check:
        return None
    if await gate.is_paused(campaign_id):
        return None
    return plan


class Chain:
    """One chain's batches: the claim made ahead, and the batch sending now."""

    def __init__(
        self,
        engine: Engine,
        plan: CampaignPlan,
        gate: SendGate,
        sender: Sender,
        *,
        lease_margin_s: float,
    ) -> None:
        self.engine, self.plan, self.gate, self.sender = engine, plan, gate, sender
        self.lease_margin_s = lease_margin_s
        self.loop = asyncio.get_running_loop()
        self.size = batch_size_for(plan.rate_per_s)
        # A batch claimed ahead waits for the current one, which takes up to the sending part
        # of its lease; its own lease starts counting at the claim, so it gets that much more.
        self.ahead_s = lease_seconds(self.size, plan.rate_per_s, margin_s=0.0)
        self.tier_limit, self.tier_window_s = gate.messaging_limit, gate.tier_window_s
        self.next_claim: asyncio.Future[list[ClaimedContact]] | None = None
        self.tier_blocked: list[float] = []  # when the tier frees up, if a claim found it full

    async def run(self, max_s: float) -> bool:
        """The chain's batches until it stops; whether more is due now."""
        deadline = self.loop.time() + max_s
        self.next_claim = self._claim(0.0)
        more = False
        try:
            while self.next_claim is not None:
                claimed = await self.next_claim
                self.next_claim = None
                if not claimed:
                    more = False
                    break
                full = len(claimed) >= self.size
                if full and self.loop.time() < deadline and not self.sender.halted():
                    self.next_claim = self._claim(self.ahead_s)
                stopped = await self.sender.send_batch(claimed)
                more = full and not stopped
                if stopped:
                    break
        finally:
            await self._give_back_claimed_ahead()
        return more

    async def _give_back_claimed_ahead(self) -> None:
        claim, self.next_claim = self.next_claim, None
        if claim is None:
            return
        ahead: list[ClaimedContact] = []
        with contextlib.suppress(Exception):  # a failed claim claimed nothing
            ahead = await claim
        self.sender.release(ahead)

    def _claim(self, ahead_s: float) -> asyncio.Future[list[ClaimedContact]]:
        return asyncio.ensure_future(self._claim_now(ahead_s))

    async def _claim_now(self, ahead_s: float) -> list[ClaimedContact]:
        room: int | None = None  # no messaging limit: claim a full batch
        if self.tier_limit:
            tier = await self.gate.tier_room(self.plan.sender_id)
            if tier.room <= 0:
                if tier.free_at is not None:
                    self.tier_blocked.append(tier.free_at)
                return []
            room = tier.room
        return await asyncio.to_thread(
            claim_batch,
            self.engine,
            self.plan,
            lease_margin_s=self.lease_margin_s,
            ahead_s=ahead_s,
            limit=room,
        )

    async def show_waits(self, more: bool) -> None:
        """The campaign shows what the chain stopped for: a send window, the tier."""
        if self.sender.window_opens and not more:
            opens_at = min(self.sender.window_opens)
            await asyncio.to_thread(note_window_wait, self.engine, self.plan.id, opens_at)
        blocked = self.tier_blocked + self.sender.tier_free_at
        if blocked:
            reason = tier_reason(self.tier_limit, self.tier_window_s, max(blocked))
            await asyncio.to_thread(note_tier_wait, self.engine, self.plan.id, reason)
