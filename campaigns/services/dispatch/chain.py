"""Batches of one campaign back to back, with the database work taken off the sending path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Engine

from campaigns.domain.dispatch import (
    CHAIN_S,
    Attempt,
    CampaignPlan,
    ClaimedContact,
    batch_size_for,
    lease_seconds,
    tier_reason,
)
from campaigns.domain.states import CampaignStatus
from campaigns.services.dispatch.batch import BatchReport, claim_batch, record_batch, released
from campaigns.services.dispatch.plan import load_plan, note_tier_wait, note_window_wait
from campaigns.services.dispatch.ports import MessageTransport, SendGate
from campaigns.services.dispatch.send import send_claimed

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
) -> bool:
    """Batches of one campaign back to back for up to ``max_s``; True if more is due now.

    Each batch is claimed (``batch.claim_batch``), sent (``send.send_claimed``) and recorded
    (``batch.record_batch``), with the database work taken off the sending path: the next
    batch is claimed (in a thread) while the current one sends, and a batch is recorded (in a
    thread) once its last answer is in, while the next one sends, so the sender's tokens keep
    flowing across batch boundaries. Transactions stay short and never span a network call.
    Stops at a pause (flag or recorded), completion, a short claim, or the time limit; a batch
    claimed ahead when a pause stops the chain is given back unsent. ``max_s`` 0: one batch.
    ``after_batch`` gets each batch's report once it is recorded.

    With a messaging limit, each claim first asks the sender's tier for its headroom and
    claims at most that many; none left (or contacts refused by the tier) stops the chain
    and shows the wait on the campaign. The tick starts no chain while the sender is blocked.

    With a send window, claimed contacts whose window is closed go back with their next
    opening as ``next_attempt_at`` (``send_claimed``), out of the due set until then; the
    chain goes on while full batches come back. When it stops with deferred contacts and
    nothing due, the campaign shows the wait for the earliest opening it saw.
    """
    plan = await asyncio.to_thread(load_plan, engine, campaign_id, default_sender)
    if plan is None or plan.status is not CampaignStatus.RUNNING:
        return False
    if await gate.is_paused(campaign_id):
        return False  # a pause is on its way to Postgres
    chain = Chain(
        engine,
        plan,
        gate,
        transport,
        lease_margin_s=lease_margin_s,
        concurrency=concurrency,
        after_batch=after_batch,
    )
    return await chain.run(max_s)


class Chain:
    """One chain's batches: the claim made ahead, and the batches whose sends are finishing
    and then recorded (each as soon as its last answer is in: a slow request holds up only
    its own batch's record, never the next batch)."""

    def __init__(
        self,
        engine: Engine,
        plan: CampaignPlan,
        gate: SendGate,
        transport: MessageTransport,
        *,
        lease_margin_s: float,
        concurrency: int,
        after_batch: AfterBatch | None,
    ) -> None:
        self.engine, self.plan, self.gate, self.transport = engine, plan, gate, transport
        self.lease_margin_s, self.concurrency = lease_margin_s, concurrency
        self.after_batch = after_batch
        self.loop = asyncio.get_running_loop()
        self.size = batch_size_for(plan.rate_per_s)
        # A batch claimed ahead waits for the current one, which takes up to the sending part
        # of its lease; its own lease starts counting at the claim, so it gets that much more.
        self.ahead_s = lease_seconds(self.size, plan.rate_per_s, margin_s=0.0)
        self.tier_limit, self.tier_window_s = gate.messaging_limit, gate.tier_window_s
        self.next_claim: asyncio.Future[list[ClaimedContact]] | None = None
        self.completing: list[asyncio.Future[BatchReport]] = []
        self.tier_blocked: list[float] = []  # when the tier frees up, if a claim found it full
        self.window_opens: list[datetime] = []  # openings of contacts this chain deferred

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
                    break
                full = len(claimed) >= self.size
                if full and self.loop.time() < deadline:
                    self.next_claim = self._claim(self.ahead_s)
                stopped = await self._start_batch(claimed)
                more = full and not stopped
                if stopped:
                    await self._give_back_claimed_ahead()
                    break
        finally:
            # Outcomes of sends that happened are written even if the chain fails later.
            more = await self._settle(more)
        await self._show_waits(more)
        return more

    async def _start_batch(self, claimed: list[ClaimedContact]) -> bool:
        """Starts sending a batch (recorded when its sends are done) and returns once all of
        its groups passed the gate: whether the chain stops here (paused, tier, complete)."""
        opened: asyncio.Future[bool] = self.loop.create_future()
        sending = asyncio.ensure_future(
            send_claimed(
                self.plan,
                claimed,
                self.gate,
                self.transport,
                concurrency=self.concurrency,
                on_opened=partial(_set_once, opened),
            )
        )
        self.completing.append(asyncio.ensure_future(self._complete(sending)))
        either: set[asyncio.Future[Any]] = {opened, sending}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not opened.done():  # send_claimed failed before it could say
            await sending  # raises its error
        return opened.result() or self._halted()  # stopped: claims made ahead go back

    async def _give_back_claimed_ahead(self) -> None:
        if self.next_claim is None:
            return
        ahead = await self.next_claim
        self.next_claim = None
        if ahead:
            self.completing.append(
                asyncio.ensure_future(self._finish(self._record(released(ahead))))
            )

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

    def _record(self, attempts: list[Attempt]) -> asyncio.Future[BatchReport]:
        return asyncio.ensure_future(
            asyncio.to_thread(
                record_batch,
                self.engine,
                self.plan,
                attempts,
                tier_limit=self.tier_limit,
                tier_window_s=self.tier_window_s,
            )
        )

    async def _finish(self, recording: asyncio.Future[BatchReport]) -> BatchReport:
        report = await recording
        if self.after_batch is not None:
            await self.after_batch(report)
        return report

    async def _complete(self, sending: asyncio.Future[list[Attempt]]) -> BatchReport:
        return await self._finish(self._record(await sending))

    def _halted(self) -> bool:
        """A batch recorded so far paused the campaign or found it complete."""
        for done in self.completing:
            if done.done() and not done.cancelled() and done.exception() is None:
                report = done.result()
                if report.paused_reason or report.completed:
                    return True
        return False

    async def _settle(self, more: bool) -> bool:
        """Waits for every batch's record; ``more`` unless one paused or completed."""
        reports = await asyncio.gather(*self.completing, return_exceptions=True)
        for report in reports:
            if isinstance(report, BaseException):
                raise report
            more = more and not report.paused_reason and not report.completed
            if report.window_opens_at is not None:
                self.window_opens.append(report.window_opens_at)
        return more

    async def _show_waits(self, more: bool) -> None:
        """The campaign shows what the chain stopped for: a send window, the tier."""
        if self.window_opens and not more:
            opens_at = min(self.window_opens)
            await asyncio.to_thread(note_window_wait, self.engine, self.plan.id, opens_at)
        if self.tier_blocked:
            reason = tier_reason(self.tier_limit, self.tier_window_s, max(self.tier_blocked))
            await asyncio.to_thread(note_tier_wait, self.engine, self.plan.id, reason)


def _set_once(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
