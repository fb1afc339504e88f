"""Outcomes recorded as they arrive: a process's recorder collects every answered (or
released) attempt of every chain and writes them every ~100 ms, or sooner once a few hundred
wait, in one transaction (``batch.record_outcomes``). No commit per message, and no chain
ever waits for a record: a request that hangs holds up only its own contact.

It also keeps what a campaign's answers say about the campaign (per process): a pausing
answer or a streak of unknown errors or parameter refusals (``AnswerStreak``) halts the
campaign's chains at once, and the next flush pauses it in Postgres with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from campaigns.domain.dispatch import TIER_WINDOW_S, AnswerStreak, Attempt, CampaignPlan
from campaigns.domain.outcomes import Decision, SendResult
from campaigns.domain.states import AUTO_PAUSE_PREFIX
from campaigns.services.dispatch.batch import BatchReport, CampaignOutcomes, record_outcomes

log = logging.getLogger(__name__)

FLUSH_S = 0.1  # outcomes wait at most this long for their record
FLUSH_ITEMS = 500  # or until this many wait
RETRY_S = 1.0  # a failed flush (Postgres away) is tried again after this, nothing dropped

OnReport = Callable[[BatchReport], Awaitable[None]]


@dataclass
class _Campaign:
    plan: CampaignPlan
    attempts: list[Attempt] = field(default_factory=list)
    streak: AnswerStreak = field(default_factory=AnswerStreak)
    pause_reason: str | None = None  # to be written by the next flush
    halted: bool = False  # paused, cancelled or stopped by its answers: chains stop


class Recorder:
    """One per event loop (a dispatcher, or one ``run_chain`` of a test)."""

    def __init__(
        self,
        engine: Engine,
        *,
        pause_after: int = 20,
        tier_limit: int = 0,
        tier_window_s: float = TIER_WINDOW_S,
        on_report: OnReport | None = None,
        flush_s: float = FLUSH_S,
        flush_items: int = FLUSH_ITEMS,
    ) -> None:
        self.engine = engine
        self.pause_after = pause_after
        self.tier_limit, self.tier_window_s = tier_limit, tier_window_s
        self.on_report = on_report
        self.flush_s, self.flush_items = flush_s, flush_items
        self._campaigns: dict[int, _Campaign] = {}
        self._waiting = 0
        self._full = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one flush at a time

    def _campaign(self, plan: CampaignPlan) -> _Campaign:
        state = self._campaigns.get(plan.id)
        if state is None:
            state = self._campaigns[plan.id] = _Campaign(plan)
        return state

    # ------------------------------------------------------------------ campaign state

    def resume(self, plan: CampaignPlan) -> None:
        """A chain starts for a running, unflagged campaign: its answers count afresh."""
        state = self._campaign(plan)
        state.plan, state.halted, state.streak = plan, False, AnswerStreak()

    def halted(self, campaign_id: int) -> bool:
        state = self._campaigns.get(campaign_id)
        return state is not None and state.halted

    def note_answer(self, plan: CampaignPlan, decision: Decision, result: SendResult) -> bool:
        """Counts an answer; True when it stops the campaign now (the caller raises the
        pause flag): a pausing answer, or a streak that reached ``pause_after``."""
        state = self._campaign(plan)
        streak = state.streak.note(decision, result, pause_after=self.pause_after)
        if decision.pause_campaign:
            reason = f"{AUTO_PAUSE_PREFIX}: {decision.reason}"
        elif streak is not None:
            reason = f"{AUTO_PAUSE_PREFIX}: {streak}"
        else:
            return False
        if state.pause_reason is None:
            state.pause_reason = reason
        first = not state.halted
        state.halted = True
        return first

    # ------------------------------------------------------------------ outcomes

    def add(self, plan: CampaignPlan, attempt: Attempt) -> None:
        """Queues one attempt's outcome (answered, or released unsent)."""
        self._campaign(plan).attempts.append(attempt)
        self._waiting += 1
        if self._waiting >= self.flush_items:
            self._full.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        """Flushes while outcomes come: the first waits up to ``flush_s`` for company."""
        while self._waiting:
            if self._waiting < self.flush_items:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.flush_s)
            if not await self.flush():
                await asyncio.sleep(RETRY_S)

    async def flush(self) -> bool:
        """Writes every waiting outcome now; False if the write failed (they stay queued)."""
        async with self._lock:
            taken = [
                (state, state.attempts, state.pause_reason)
                for state in self._campaigns.values()
                if state.attempts or state.pause_reason
            ]
            if not taken:
                return True
            for state, _, _ in taken:
                state.attempts, state.pause_reason = [], None
            count = sum(len(a) for _, a, _ in taken)
            self._waiting -= count
            flush = [CampaignOutcomes(s.plan, a, reason) for s, a, reason in taken]
            try:
                reports = await asyncio.to_thread(
                    record_outcomes,
                    self.engine,
                    flush,
                    tier_limit=self.tier_limit,
                    tier_window_s=self.tier_window_s,
                )
            except Exception:
                log.warning("recording %d outcomes failed; retrying", count, exc_info=True)
                for state, attempts, reason in taken:  # back in front, nothing lost
                    state.attempts[:0] = attempts
                    state.pause_reason = state.pause_reason or reason
                self._waiting += count
                return False
        for report in reports:
            if report.paused_reason or report.cancelled:
                self._campaigns[report.campaign_id].halted = True
            if self.on_report is not None:
                await self.on_report(report)
        return True

    async def drain(self) -> None:
        """Until every queued outcome is written (a test's chain, a dispatcher stopping)."""
        while self._waiting or any(s.pause_reason for s in self._campaigns.values()):
            if not await self.flush():
                await asyncio.sleep(RETRY_S)
