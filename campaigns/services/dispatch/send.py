"""A claimed batch through the gate to the platform: each group paced by the campaign's
bucket, started in the send ledger (Postgres) just before it leaves, and every answer handed
to the recorder as it arrives; no transaction is open meanwhile."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from campaigns.domain.dispatch import (
    SLOW_DOWN_S,
    Attempt,
    CampaignPlan,
    ClaimedContact,
    SendJob,
    Starts,
    group_size,
)
from campaigns.domain.outcomes import classify
from campaigns.domain.send_window import openings
from campaigns.services.dispatch.ports import (
    MessageTransport,
    OutcomeSink,
    SendGate,
    Starter,
)

log = logging.getLogger(__name__)


def job_for(plan: CampaignPlan, contact: ClaimedContact) -> SendJob:
    return SendJob(
        sender_id=plan.sender_id,
        to_e164=contact.phone_e164,
        template=plan.template,
        language=plan.language,
        body_params=tuple(contact.variables.get(name, "") for name in plan.body_variables),
        callback_data=str(contact.attempt_id),
        param_names=plan.body_variables if plan.named_variables else (),
    )


class Sender:
    """One chain's sending: its concurrency limit, its in-flight sends, and the ports."""

    def __init__(
        self,
        plan: CampaignPlan,
        gate: SendGate,
        transport: MessageTransport,
        ledger: Starter,
        recorder: OutcomeSink,
        *,
        concurrency: int = 200,
        rate: Callable[[], float] | None = None,
        stopped: Callable[[], bool] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``rate``: the campaign's pacing rate now (its fair share of the sender; default
        its configured rate). ``stopped``: the chain must stop opening groups (its key was
        lost)."""
        self.plan, self.gate, self.transport = plan, gate, transport
        self.ledger, self.recorder = ledger, recorder
        self.rate: Callable[[], float] = rate or (lambda: plan.rate_per_s)
        self.stopped: Callable[[], bool] = stopped or (lambda: False)
        self.rng = rng or random.Random()
        self.slots = asyncio.Semaphore(concurrency)
        # A group takes its slots before it opens: one as large as the limit would wait for
        # every send of the one before (the slowest answer, then its start statement) with
        # nothing in flight. At most half: the next group gathers its slots meanwhile.
        self.max_group = max(1, concurrency // 2)
        self.inflight: set[asyncio.Task[None]] = set()
        self.start_s = 0.0  # how long the start statement took lately (moving average)
        self.tier_free_at: list[float] = []  # the tier refused contacts: it frees up then
        self.window_opens: list[datetime] = []  # openings of contacts deferred by the window

    def halted(self) -> bool:
        return self.stopped() or self.recorder.halted(self.plan.id)

    def release(self, contacts: Sequence[ClaimedContact]) -> None:
        """Gives contacts back unsent (the attempt did not happen)."""
        for contact in contacts:
            self.recorder.add(self.plan, Attempt(contact, None, None, None, None))

    async def send_batch(self, claimed: Sequence[ClaimedContact]) -> bool:
        """Opens the batch's groups in turn and starts their sends; returns once every group
        has passed (False) or the batch stopped opening them (True: a pause, the tier, the
        gate or the ledger unreachable, the chain's key lost); the rest goes back unsent.
        Sends still in flight finish on their own (``inflight``) and are recorded then."""
        sendable = await self._defer_closed_windows(claimed)
        first = 0
        while first < len(sendable):
            size = min(group_size(self.rate(), self.start_s), self.max_group)
            if self.halted():
                self.release(sendable[first:])
                return True
            group = sendable[first : first + size]
            if not await self._open_group(group):
                self.release(sendable[first + len(group) :])
                return True
            first += len(group)
        return self.halted()

    async def _defer_closed_windows(
        self, claimed: Sequence[ClaimedContact]
    ) -> Sequence[ClaimedContact]:
        """Gives back the contacts whose send window is closed now (due again when it
        opens); the others."""
        window = self.plan.window
        if window is None:
            return claimed
        # In a thread: a batch of multi-zone numbers costs milliseconds of pure Python.
        phones = [c.phone_e164 for c in claimed]
        opens = await asyncio.to_thread(openings, window, phones, datetime.now(UTC))
        sendable: list[ClaimedContact] = []
        for contact, opens_at in zip(claimed, opens, strict=True):
            if opens_at is None:
                sendable.append(contact)
                continue
            self.window_opens.append(opens_at)
            attempt = Attempt(contact, None, None, None, None, opens_at=opens_at)
            self.recorder.add(self.plan, attempt)
        return sendable

    async def _open_group(self, group: Sequence[ClaimedContact]) -> bool:
        """One group through the gate and the ledger, its sends started; whether to go on.
        On False the group itself has been given back (or sent, as far as it was started)."""
        for _ in group:
            await self.slots.acquire()
        try:
            admitted, go = await self._pass_gate(group)
            tier_refused = {c.id for c in group} - {c.id for c, _ in admitted} if go else set()
            starts = await self._start(admitted) if admitted else Starts()
        except BaseException:
            self._free(len(group))
            self.release(group)
            raise
        due = {c.id: at for c, at in admitted}
        for contact in group:
            if contact.id in starts.started:
                task = asyncio.create_task(self._send(contact, due[contact.id]))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
                continue
            self.slots.release()
            if contact.id in starts.refused:  # the registry's: Sending failed already
                code = starts.refused[contact.id]
                attempt = Attempt(contact, None, None, None, None, suppressed=code)
                self.recorder.add(self.plan, attempt)
            elif contact.id not in tier_refused:  # recorded already
                self.release([contact])  # paused, unreachable, or its lease ran out
        answered = len(starts.started) + len(starts.refused)
        return go and not tier_refused and answered == len(admitted)

    async def _pass_gate(
        self, group: Sequence[ClaimedContact]
    ) -> tuple[list[tuple[ClaimedContact, float]], bool]:
        """The group's tokens and the pause pre-check; (admitted contacts with their due
        times, whether the gate let the group through). Contacts the tier refuses go back
        here; with any refused the chain stops after this group (the tier is full)."""
        try:
            grant = await self.gate.open_group(
                self.plan.id,
                self.plan.sender_id,
                self.rate(),
                len(group),
                [c.phone_e164 for c in group] if self.gate.messaging_limit else (),
            )
        except Exception:
            # Nothing of this group was started: it and the rest go back unsent at once.
            log.warning("send gate unreachable: the rest of the batch goes back", exc_info=True)
            return [], False
        if not grant.go:
            return [], False
        admitted: list[tuple[ClaimedContact, float]] = []
        for offset, (contact, due_at) in enumerate(zip(group, grant.due_at, strict=True)):
            if offset in grant.refused:  # the tier is full: released unsent
                attempt = Attempt(contact, None, None, None, None, grant.tier_free_at)
                self.recorder.add(self.plan, attempt)
            else:
                admitted.append((contact, due_at))
        if grant.refused and grant.tier_free_at is not None:
            self.tier_free_at.append(grant.tier_free_at)
        return admitted, True

    async def _start(self, admitted: Sequence[tuple[ClaimedContact, float]]) -> Starts:
        """The start statement for the admitted contacts (with the registry's check).
        Postgres unreachable: none started (they go back unsent)."""
        if self.halted():
            return Starts()
        began = time.monotonic()
        try:
            starts = await self.ledger.start([(c.id, c.attempt_id) for c, _ in admitted])
            self.start_s = 0.7 * self.start_s + 0.3 * (time.monotonic() - began)
        except Exception:
            log.warning("send ledger unreachable: the rest of the batch goes back", exc_info=True)
            return Starts()
        return starts

    def _free(self, n: int) -> None:
        for _ in range(n):
            self.slots.release()

    async def _send(self, contact: ClaimedContact, due_at: float) -> None:
        """One started message when its token is due, unless its campaign stopped first
        (then it goes back unsent: the record clears its start mark)."""
        loop = asyncio.get_running_loop()
        try:
            delay = due_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.recorder.halted(self.plan.id):
                self.release([contact])
                return
            started = time.monotonic()
            result = await self.transport.send(job_for(self.plan, contact))
            latency = time.monotonic() - started
        finally:
            self.slots.release()
        decision = classify(result, contact.attempt_no, self.plan.max_attempts, self.rng)
        attempt = Attempt(contact, result, decision, datetime.now(UTC), latency)
        stop = self.recorder.note_answer(self.plan, decision, result)
        self.recorder.add(self.plan, attempt)
        try:
            if stop:
                await self.gate.pause(self.plan.id)
            if decision.slow_down:
                await self.gate.slow_down(self.plan.sender_id, SLOW_DOWN_S)
        except Exception:  # Redis away: the recorded pause (Postgres) still stops the rest
            log.warning("could not tell Redis to pause or slow down", exc_info=True)

    async def finish(self) -> None:
        """Waits for every send still in flight (each is recorded as it ends)."""
        while self.inflight:
            await asyncio.gather(*list(self.inflight), return_exceptions=True)
