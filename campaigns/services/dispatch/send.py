"""A claimed batch through the gate to the platform: send every contact once, paced by the
shared token bucket, stopping at a pause; no transaction is open meanwhile."""

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
    GroupGrant,
    SendJob,
    group_size,
)
from campaigns.domain.outcomes import classify
from campaigns.domain.send_window import openings
from campaigns.services.dispatch.ports import MessageTransport, SendGate

log = logging.getLogger(__name__)


def job_for(plan: CampaignPlan, contact: ClaimedContact) -> SendJob:
    return SendJob(
        sender_id=plan.sender_id,
        to_e164=contact.phone_e164,
        template=plan.template,
        language=plan.language,
        body_params=tuple(contact.variables.get(name, "") for name in plan.body_variables),
        callback_data=str(contact.attempt_id),
    )


async def send_claimed(
    plan: CampaignPlan,
    claimed: Sequence[ClaimedContact],
    gate: SendGate,
    transport: MessageTransport,
    *,
    concurrency: int = 200,
    rng: random.Random | None = None,
    on_opened: Callable[[bool], None] | None = None,
) -> list[Attempt]:
    """Sends every claimed contact once, paced by the gate; stops at a pause flag.

    ``on_opened(stopped)`` is called once every group has passed the gate (``stopped``
    False), or when the batch stopped opening groups (a pause, the tier): from then on the
    batch books no more tokens, so the caller may start the next one while this one's last
    answers (a slow or hanging request) come in.

    Contacts pass the gate in groups (``group_size``): a group is booked, checked against
    the pause flag and marked started as one, then each message goes out when its token is
    due. A group is opened only when the concurrency limit has room for all of it. A
    decision that pauses the campaign (bad token, missing template) raises the flag at once,
    so the rest of this batch - including not yet sent messages of an open group, whose
    markers are then removed - and every other worker's batch stop before their next send.

    With a send window, contacts whose window is closed now never reach the gate: they go
    back unsent with the time it opens (``Attempt.opens_at``).
    """
    batch = _BatchSend(plan, claimed, gate, transport, concurrency, rng or random.Random())
    sendable = await batch.defer_closed_windows()
    stopped = True  # until every group has been opened
    try:
        stopped = await batch.open_groups(sendable)
    except BaseException:
        # Let the sends already started finish (their markers are set) before giving up.
        await asyncio.gather(*batch.tasks, return_exceptions=True)
        raise
    finally:
        if on_opened is not None:
            on_opened(stopped)
    return await batch.attempts()


class _BatchSend:
    """One batch's send phase: its groups at the gate, its sends, what each became."""

    def __init__(
        self,
        plan: CampaignPlan,
        claimed: Sequence[ClaimedContact],
        gate: SendGate,
        transport: MessageTransport,
        concurrency: int,
        rng: random.Random,
    ) -> None:
        self.plan, self.claimed, self.gate, self.transport = plan, claimed, gate, transport
        self.rng = rng
        self.loop = asyncio.get_running_loop()
        self.slots = asyncio.Semaphore(concurrency)
        # A group opens only when the concurrency limit has room for all of it: never larger
        # than that limit, or it would wait for slots forever.
        self.group_size = min(group_size(plan.rate_per_s), concurrency)
        self.tiered = gate.messaging_limit > 0  # recipients pass the sender's tier
        self.done: list[Attempt | None] = [None] * len(claimed)
        self.tasks: list[asyncio.Task[None]] = []
        self.unsent_marked: list[str] = []
        self.stop = False  # this batch paused the campaign

    async def defer_closed_windows(self) -> Sequence[int]:
        """Gives back the contacts whose send window is closed now (with its next opening);
        the indexes of the others."""
        window = self.plan.window
        if window is None:
            return range(len(self.claimed))
        # In a thread: a batch of multi-zone numbers costs milliseconds of pure Python.
        phones = [c.phone_e164 for c in self.claimed]
        opens = await asyncio.to_thread(openings, window, phones, datetime.now(UTC))
        for index, (contact, opens_at) in enumerate(zip(self.claimed, opens, strict=True)):
            if opens_at is not None:
                self.done[index] = Attempt(contact, None, None, None, None, opens_at=opens_at)
        return [i for i, opens_at in enumerate(opens) if opens_at is None]

    async def open_groups(self, sendable: Sequence[int]) -> bool:
        """Opens the groups in turn; whether the batch stopped (a pause, the tier, the gate
        unreachable) rather than opening them all."""
        for first in range(0, len(sendable), self.group_size):
            if not await self._open_group(sendable[first : first + self.group_size]):
                return True
        return self.stop

    async def _open_group(self, indexes: Sequence[int]) -> bool:
        """One group through the gate and its sends started; whether to open the next."""
        group = [self.claimed[i] for i in indexes]
        for _ in group:
            await self.slots.acquire()
        if self.stop:
            return False
        grant = await self._ask_gate(group)
        if grant is None or not grant.go:
            return False
        for offset, (index, due_at) in enumerate(zip(indexes, grant.due_at, strict=True)):
            contact = self.claimed[index]
            if offset in grant.refused:
                self.slots.release()  # the tier is full: never marked, released unsent
                self.done[index] = Attempt(contact, None, None, None, None, grant.tier_free_at)
            elif offset in grant.revoked:
                self.slots.release()  # given back by recovery: never sent, recorded as released
            else:
                self.tasks.append(self.loop.create_task(self._send(index, contact, due_at)))
        return not grant.refused  # the tier is full: the rest is given back unsent

    async def _ask_gate(self, group: Sequence[ClaimedContact]) -> GroupGrant | None:
        """The gate's grant for the group; None if Redis is unreachable (a restart)."""
        try:
            return await self.gate.open_group(
                self.plan.id,
                self.plan.sender_id,
                self.plan.rate_per_s,
                [str(c.attempt_id) for c in group],
                [c.phone_e164 for c in group] if self.tiered else (),
            )
        except Exception:
            # This worker sends neither this group nor the rest, so they go back unsent and
            # the groups already sent are recorded. Left In progress instead, they would wait
            # for lease recovery, which cannot trust missing markers after a Redis restart and
            # would give them up.
            log.warning("send gate unreachable: the rest of the batch goes back", exc_info=True)
            return None

    async def _send(self, index: int, contact: ClaimedContact, due_at: float) -> None:
        """One message when its token is due, unless this batch paused the campaign first."""
        try:
            delay = due_at - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stop:
                self.unsent_marked.append(str(contact.attempt_id))
                return
            started = time.monotonic()
            result = await self.transport.send(job_for(self.plan, contact))
            latency = time.monotonic() - started
        finally:
            self.slots.release()
        decision = classify(result, contact.attempt_no, self.plan.max_attempts, self.rng)
        if decision.pause_campaign:
            self.stop = True
            await self.gate.pause(self.plan.id)
        if decision.slow_down:
            await self.gate.slow_down(self.plan.sender_id, SLOW_DOWN_S)
        self.done[index] = Attempt(contact, result, decision, datetime.now(UTC), latency)

    async def attempts(self) -> list[Attempt]:
        """Waits for every started send; then each contact's attempt (unsent: released)."""
        await asyncio.gather(*self.tasks)
        if self.unsent_marked:
            await self.gate.unmark(self.unsent_marked)
        return [
            a if a is not None else Attempt(c, None, None, None, None)
            for a, c in zip(self.done, self.claimed, strict=True)
        ]
