"""Dispatch use cases: claim a batch, send it under the rate limiter, record it; recover leases.

The network is reached only through two small ports (``SendGate``, ``MessageTransport``)
that the Celery adapter fills with Redis and the Cloud API client, so this module stays free
of Celery and HTTP libraries. Transactions are short and never span a network call:
claim (one statement, commit) -> sends (no transaction open) -> record (one statement).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine

from campaigns.domain import dispatch as rules
from campaigns.domain.dispatch import (
    CHAIN_S,
    SLOW_DOWN_S,
    TIER_WAIT_PREFIX,
    TIER_WINDOW_S,
    WINDOW_WAIT_PREFIX,
    Attempt,
    CampaignPlan,
    ClaimedContact,
    GroupGrant,
    RecordedOutcome,
    SendJob,
    TierRoom,
    batch_size_for,
    decide_expired_lease,
    group_size,
    lease_seconds,
    released_to,
    tier_reason,
    window_reason,
)
from campaigns.domain.outcomes import OutcomeKind, SendResult, classify
from campaigns.domain.send_window import SendWindow, openings
from campaigns.domain.states import AUTO_PAUSE_PREFIX, CampaignStatus, ContactState
from campaigns.storage import admin as admin_db
from campaigns.storage import campaigns as campaigns_db
from campaigns.storage import dispatch as dispatch_db
from campaigns.storage import opt_outs as opt_outs_db
from campaigns.storage import sql

log = logging.getLogger(__name__)

C = ContactState
T = TypeVar("T")


# --------------------------------------------------------------------------- ports


class CoroutineRunner(Protocol):
    """Runs an awaitable to completion from synchronous code (the worker's event loop)."""

    def __call__(self, awaitable: Awaitable[T], /) -> T: ...


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


# --------------------------------------------------------------------------- pure rules


# --------------------------------------------------------------------------- batch


@dataclass
class BatchReport:
    campaign_id: int
    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    error_codes: Counter[int] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)
    paused_reason: str | None = None
    tier_free_at: float | None = None  # the tier refused contacts; it frees up then (epoch s)
    deferred: int = 0  # released unsent because their send window is closed
    window_opens_at: datetime | None = None  # the earliest opening among those
    more: bool = False  # a full batch was claimed: more is probably due now
    completed: bool = False


def load_plan(engine: Engine, campaign_id: int, default_sender: str) -> CampaignPlan | None:
    with engine.connect() as conn:
        row = campaigns_db.get_campaign(conn, campaign_id)
    if row is None:
        return None
    window = None
    if row["send_window_start"] is not None:
        window = SendWindow(row["send_window_start"], row["send_window_end"], row["send_window_tz"])
    return CampaignPlan(
        id=campaign_id,
        status=CampaignStatus(row["status"]),
        template=row["template_name"] or "",
        language=row["template_language"],
        body_variables=tuple(row["body_variables"] or ()),
        sender_id=row["phone_number_id"] or default_sender,
        rate_per_s=float(row["rate_per_s"]),
        max_attempts=int(row["max_attempts"]),
        window=window,
    )


def note_tier_wait(engine: Engine, campaign_id: int, reason: str) -> None:
    """Shows a running campaign's wait for the messaging tier in its ``status_reason``."""
    with engine.begin() as conn:
        row = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
        running = row is not None and row["status"] == CampaignStatus.RUNNING.value
        if running and row is not None and row["status_reason"] != reason:
            campaigns_db.set_status_reason(conn, campaign_id, reason)


def note_window_wait(engine: Engine, campaign_id: int, opens_at: datetime) -> None:
    """Shows a running campaign's wait for its recipients' send window in its
    ``status_reason``, when nothing of it is due now (all that is left waits)."""
    reason = window_reason(opens_at)
    with engine.begin() as conn:
        row = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
        if row is None or row["status"] != CampaignStatus.RUNNING.value:
            return
        if row["status_reason"] != reason and dispatch_db.next_due_in_s(conn, campaign_id) != 0.0:
            campaigns_db.set_status_reason(conn, campaign_id, reason)


def claim_batch(
    engine: Engine,
    plan: CampaignPlan,
    *,
    lease_margin_s: float,
    ahead_s: float = 0.0,
    limit: int | None = None,
) -> list[ClaimedContact]:
    """``ahead_s``: the claim waits that long before its sending starts (claimed ahead).
    ``limit``: claim at most this many (the messaging tier's headroom)."""
    size = batch_size_for(plan.rate_per_s)
    if limit is not None:
        size = max(0, min(size, limit))
        if not size:
            return []
    lease = ahead_s + lease_seconds(size, plan.rate_per_s, margin_s=lease_margin_s)
    with engine.begin() as conn:
        return dispatch_db.claim_due(conn, plan.id, limit=size, lease_s=lease)


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
    rng = rng or random.Random()
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    done: list[Attempt | None] = [None] * len(claimed)
    sendable: Sequence[int] = range(len(claimed))
    if plan.window is not None:
        # In a thread: a batch of multi-zone numbers costs milliseconds of pure Python.
        opens = await asyncio.to_thread(
            openings, plan.window, [c.phone_e164 for c in claimed], datetime.now(UTC)
        )
        for index, (contact, opens_at) in enumerate(zip(claimed, opens, strict=True)):
            if opens_at is not None:
                done[index] = Attempt(contact, None, None, None, None, opens_at=opens_at)
        sendable = [i for i, opens_at in enumerate(opens) if opens_at is None]
    unsent_marked: list[str] = []
    stop = False  # this batch paused the campaign

    async def one(index: int, contact: ClaimedContact, due_at: float) -> None:
        nonlocal stop
        try:
            delay = due_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop:
                unsent_marked.append(str(contact.attempt_id))
                return
            started = time.monotonic()
            result = await transport.send(job_for(plan, contact))
            latency = time.monotonic() - started
        finally:
            slots.release()
        decision = classify(result, contact.attempt_no, plan.max_attempts, rng)
        if decision.pause_campaign:
            stop = True
            await gate.pause(plan.id)
        if decision.slow_down:
            await gate.slow_down(plan.sender_id, SLOW_DOWN_S)
        done[index] = Attempt(contact, result, decision, datetime.now(UTC), latency)

    # A group opens only when the concurrency limit has room for all of it: never larger
    # than that limit, or it would wait for slots forever.
    size = min(group_size(plan.rate_per_s), concurrency)
    tiered = gate.messaging_limit > 0
    tasks: list[asyncio.Task[None]] = []
    stopped = True  # until every group has been opened
    try:
        for first in range(0, len(sendable), size):
            indexes = sendable[first : first + size]
            group = [claimed[i] for i in indexes]
            for _ in group:
                await slots.acquire()
            if stop:
                break
            try:
                grant = await gate.open_group(
                    plan.id,
                    plan.sender_id,
                    plan.rate_per_s,
                    [str(c.attempt_id) for c in group],
                    [c.phone_e164 for c in group] if tiered else (),
                )
            except Exception:
                # Redis is unreachable (a restart): this worker sends neither this group nor
                # the rest, so they go back unsent and the groups already sent are recorded.
                # Left In progress instead, they would wait for lease recovery, which cannot
                # trust missing markers after a Redis restart and would give them up.
                log.warning("send gate unreachable: the rest of the batch goes back", exc_info=True)
                break
            if not grant.go:
                break
            for offset, (index, due_at) in enumerate(zip(indexes, grant.due_at, strict=True)):
                contact = claimed[index]
                if offset in grant.refused:
                    slots.release()  # the tier is full: never marked, released unsent
                    done[index] = Attempt(contact, None, None, None, None, grant.tier_free_at)
                    continue
                if offset in grant.revoked:
                    slots.release()  # given back by recovery: never sent, recorded as released
                    continue
                tasks.append(loop.create_task(one(index, contact, due_at)))
            if grant.refused:
                break  # the tier is full: the rest of the batch is given back unsent
        else:
            stopped = stop
    except BaseException:
        # Let the sends already started finish (their markers are set) before giving up.
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if on_opened is not None:
            on_opened(stopped)
    await asyncio.gather(*tasks)
    if unsent_marked:
        await gate.unmark(unsent_marked)
    return [
        a if a is not None else Attempt(c, None, None, None, None)
        for a, c in zip(done, claimed, strict=True)
    ]


def _recorded(attempt: Attempt) -> RecordedOutcome:
    contact, result, decision = attempt.contact, attempt.result, attempt.decision
    if result is None or decision is None:
        opens_at = attempt.opens_at  # set: due again when its send window opens
        return RecordedOutcome(
            contact.id,
            contact.attempt_id,
            released_to(contact.attempt_no),
            reason=window_reason(opens_at) if opens_at is not None else None,
            released=True,
            not_before=opens_at,
        )
    target = {
        OutcomeKind.SENT: C.SENT,
        OutcomeKind.RETRY: C.RETRY_SCHEDULED,
        OutcomeKind.SENDING_FAILED: C.SENDING_FAILED,
        OutcomeKind.ERROR: C.ERROR,
        OutcomeKind.UNKNOWN: None,  # stays in progress: its webhook (or recovery) settles it
    }[decision.kind]
    detail = None
    if result.error_code is not None or result.error_details or result.error_title:
        detail = " - ".join(x for x in (result.error_title, result.error_details) if x)[:500]
    return RecordedOutcome(
        contact_id=contact.id,
        attempt_id=contact.attempt_id,
        state=target,
        reason=decision.reason if target is not C.SENT else None,
        wamid=result.wamid,
        wa_id=result.wa_id,
        error_code=result.error_code,
        error_detail=detail,
        retry_after_s=decision.retry_after_s,
        at=attempt.answered_at if target is C.SENT else None,
    )


def record_batch(
    engine: Engine,
    plan: CampaignPlan,
    attempts: Sequence[Attempt],
    *,
    tier_limit: int = 0,
    tier_window_s: float = TIER_WINDOW_S,
) -> BatchReport:
    """Writes the batch's outcomes. With a messaging limit, a batch the tier cut short shows
    the wait in the campaign's ``status_reason``; a batch that sent clears that wait, and a
    send window's wait too (the chain that stops with contacts waiting shows it)."""
    report = BatchReport(campaign_id=plan.id, claimed=len(attempts))
    pause_reason: str | None = None
    opted_out: list[str] = []
    for attempt in attempts:
        decision, result = attempt.decision, attempt.result
        if decision is None or result is None:
            report.outcomes["released"] += 1
            if attempt.tier_free_at is not None:
                report.tier_free_at = max(report.tier_free_at or 0.0, attempt.tier_free_at)
            if attempt.opens_at is not None:
                report.deferred += 1
                if report.window_opens_at is None or attempt.opens_at < report.window_opens_at:
                    report.window_opens_at = attempt.opens_at
            continue
        report.outcomes[decision.kind.value] += 1
        if result.error_code is not None:
            report.error_codes[result.error_code] += 1
        if attempt.latency_s is not None:
            report.latencies_s.append(attempt.latency_s)
        if decision.kind is OutcomeKind.SENT and attempt.answered_at is not None:
            report.accepted_at.append(attempt.answered_at.timestamp())
        if decision.pause_campaign and pause_reason is None:
            pause_reason = f"{AUTO_PAUSE_PREFIX}: {decision.reason}"
        if decision.opted_out:
            opted_out.append(attempt.contact.phone_e164)

    with engine.begin() as conn:
        dispatch_db.record_outcomes(conn, [_recorded(a) for a in attempts])
        opt_outs_db.insert_opt_outs(conn, opted_out, source="platform 131050")
        row = campaigns_db.get_campaign(conn, plan.id, for_update=True)
        status = CampaignStatus(row["status"]) if row else plan.status
        if pause_reason and status is CampaignStatus.RUNNING:
            campaigns_db.set_campaign_status(
                conn,
                plan.id,
                status,
                CampaignStatus.PAUSED,
                source="dispatch",
                detail=pause_reason,
                extra={"status_reason": pause_reason},
            )
            report.paused_reason = pause_reason
            status = CampaignStatus.PAUSED
        if tier_limit and status is CampaignStatus.RUNNING and row is not None:
            if report.tier_free_at is not None:
                reason = tier_reason(tier_limit, tier_window_s, report.tier_free_at)
                if row["status_reason"] != reason:
                    campaigns_db.set_status_reason(conn, plan.id, reason)
            elif report.outcomes[OutcomeKind.SENT.value] and str(
                row["status_reason"] or ""
            ).startswith(TIER_WAIT_PREFIX):
                campaigns_db.set_status_reason(conn, plan.id, None)  # sending again
        if (
            plan.window is not None
            and status is CampaignStatus.RUNNING
            and row is not None
            and report.outcomes[OutcomeKind.SENT.value]
            and str(row["status_reason"] or "").startswith(WINDOW_WAIT_PREFIX)
        ):
            campaigns_db.set_status_reason(conn, plan.id, None)  # a window opened: sending again
        if status is CampaignStatus.CANCELLED and report.outcomes["released"]:
            # Claims given back after a cancel are cancelled like every other unsent contact.
            admin_db.cancel_pending(conn, plan.id, detail="campaign cancelled")
        if status is CampaignStatus.RUNNING and not dispatch_db.has_pending(conn, plan.id):
            campaigns_db.set_campaign_status(
                conn,
                plan.id,
                status,
                CampaignStatus.COMPLETED,
                source="dispatch",
                extra={"finished_at": sql.now(conn)},
            )
            report.completed = True
    return report


def run_batch(
    engine: Engine,
    campaign_id: int,
    gate: SendGate,
    transport: MessageTransport,
    run: CoroutineRunner,
    *,
    default_sender: str,
    lease_margin_s: float = 60.0,
    concurrency: int = 200,
) -> BatchReport:
    """Claim, send, record one batch of a campaign. ``run`` runs a coroutine to completion."""
    plan = load_plan(engine, campaign_id, default_sender)
    if plan is None or plan.status is not CampaignStatus.RUNNING:
        return BatchReport(campaign_id=campaign_id)
    if run(gate.is_paused(campaign_id)):
        return BatchReport(campaign_id=campaign_id)  # a pause is on its way to Postgres
    tier_limit, window = gate.messaging_limit, gate.tier_window_s
    room: int | None = None
    if tier_limit:
        tier = run(gate.tier_room(plan.sender_id))
        if tier.room <= 0:
            if tier.free_at is not None:
                note_tier_wait(engine, plan.id, tier_reason(tier_limit, window, tier.free_at))
            return BatchReport(campaign_id=campaign_id, tier_free_at=tier.free_at)
        room = tier.room
    claimed = claim_batch(engine, plan, lease_margin_s=lease_margin_s, limit=room)
    if not claimed:
        return BatchReport(campaign_id=campaign_id)
    attempts = run(send_claimed(plan, claimed, gate, transport, concurrency=concurrency))
    report = record_batch(engine, plan, attempts, tier_limit=tier_limit, tier_window_s=window)
    report.more = (
        len(claimed) >= batch_size_for(plan.rate_per_s)
        and not report.paused_reason
        and report.tier_free_at is None
    )
    if report.window_opens_at is not None and not report.more:
        note_window_wait(engine, plan.id, report.window_opens_at)
    return report


def _released(claimed: Sequence[ClaimedContact]) -> list[Attempt]:
    return [Attempt(c, None, None, None, None) for c in claimed]


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
    after_batch: Callable[[BatchReport], Awaitable[None]] | None = None,
) -> bool:
    """Batches of one campaign back to back for up to ``max_s``; True if more is due now.

    The same claim -> send -> record steps as ``run_batch``, with the database work taken off
    the sending path: the next batch is claimed (in a thread) while the current one sends,
    and a batch is recorded (in a thread) while the next one sends, so the sender's tokens
    keep flowing across batch boundaries. Transactions stay short and never span a network
    call. Stops at a pause (flag or recorded), completion, a short claim, or the time limit;
    a batch claimed ahead when a pause stops the chain is given back unsent.
    ``after_batch`` gets each batch's report once it is recorded.

    With a messaging limit, each claim first asks the sender's tier for its headroom and
    claims at most that many; none left (or contacts refused by the tier) stops the chain
    and shows the wait on the campaign. The tick starts no chain while the sender is blocked.

    With a send window, claimed contacts whose window is closed go back with their next
    opening as ``next_attempt_at`` (``send_claimed``), out of the due set until then; the
    chain goes on while full batches come back. When it stops with deferred contacts and
    nothing due, the campaign shows the wait for the earliest opening it saw.
    """
    loop = asyncio.get_running_loop()
    plan = await asyncio.to_thread(load_plan, engine, campaign_id, default_sender)
    if plan is None or plan.status is not CampaignStatus.RUNNING:
        return False
    if await gate.is_paused(campaign_id):
        return False  # a pause is on its way to Postgres
    deadline = loop.time() + max_s
    size = batch_size_for(plan.rate_per_s)
    tier_limit, window = gate.messaging_limit, gate.tier_window_s
    tier_blocked: list[float] = []  # when the tier frees up, if a claim found it full

    async def claim_now(ahead_s: float) -> list[ClaimedContact]:
        assert plan is not None
        room: int | None = None  # no messaging limit: claim a full batch
        if tier_limit:
            tier = await gate.tier_room(plan.sender_id)
            if tier.room <= 0:
                if tier.free_at is not None:
                    tier_blocked.append(tier.free_at)
                return []
            room = tier.room
        return await asyncio.to_thread(
            claim_batch, engine, plan, lease_margin_s=lease_margin_s, ahead_s=ahead_s, limit=room
        )

    def claim(ahead_s: float) -> asyncio.Future[list[ClaimedContact]]:
        return asyncio.ensure_future(claim_now(ahead_s))

    def record(attempts: list[Attempt]) -> asyncio.Future[BatchReport]:
        assert plan is not None
        return asyncio.ensure_future(
            asyncio.to_thread(
                record_batch, engine, plan, attempts, tier_limit=tier_limit, tier_window_s=window
            )
        )

    async def finish(recording: asyncio.Future[BatchReport]) -> BatchReport:
        report = await recording
        if after_batch is not None:
            await after_batch(report)
        return report

    async def complete(sending: asyncio.Future[list[Attempt]]) -> BatchReport:
        return await finish(record(await sending))

    def halted(reports: Sequence[asyncio.Future[BatchReport]]) -> bool:
        """A batch recorded so far paused the campaign or found it complete."""
        for done in reports:
            if done.done() and not done.cancelled() and done.exception() is None:
                report = done.result()
                if report.paused_reason or report.completed:
                    return True
        return False

    # A batch claimed ahead waits for the current one, which takes up to the sending part
    # of its lease; its own lease starts counting at the claim, so it gets that much more.
    ahead_s = lease_seconds(size, plan.rate_per_s, margin_s=0.0)
    next_claim: asyncio.Future[list[ClaimedContact]] | None = claim(0.0)
    # Batches whose sends are finishing, then recorded (each as soon as its last answer is
    # in): a slow request holds up only its own batch's record, never the next batch.
    completing: list[asyncio.Future[BatchReport]] = []
    more = False
    window_opens: list[datetime] = []  # openings of contacts this chain deferred
    try:
        while next_claim is not None:
            claimed = await next_claim
            next_claim = None
            if not claimed:
                break
            full = len(claimed) >= size
            if full and loop.time() < deadline:
                next_claim = claim(ahead_s)
            opened: asyncio.Future[bool] = loop.create_future()

            def on_opened(stopped: bool, opened: asyncio.Future[bool] = opened) -> None:
                if not opened.done():
                    opened.set_result(stopped)

            sending = asyncio.ensure_future(
                send_claimed(
                    plan, claimed, gate, transport, concurrency=concurrency, on_opened=on_opened
                )
            )
            completing.append(asyncio.ensure_future(complete(sending)))
            either: set[asyncio.Future[Any]] = {opened, sending}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not opened.done():  # send_claimed failed before it could say
                await sending  # raises its error
            stopped = opened.result() or halted(completing)  # paused: claims given back
            more = full and not stopped
            if stopped and next_claim is not None:
                ahead = await next_claim
                next_claim = None
                if ahead:
                    completing.append(asyncio.ensure_future(finish(record(_released(ahead)))))
            if stopped:
                break
    finally:
        # Outcomes of sends that happened are written even if the chain fails later.
        reports = await asyncio.gather(*completing, return_exceptions=True)
        for report in reports:
            if isinstance(report, BaseException):
                raise report
            more = more and not report.paused_reason and not report.completed
            if report.window_opens_at is not None:
                window_opens.append(report.window_opens_at)
    if window_opens and not more:
        await asyncio.to_thread(note_window_wait, engine, plan.id, min(window_opens))
    if tier_blocked:
        reason = tier_reason(tier_limit, window, max(tier_blocked))
        await asyncio.to_thread(note_tier_wait, engine, plan.id, reason)
    return more


# --------------------------------------------------------------------------- recovery


@dataclass
class RecoveryReport:
    released: int = 0
    errored: int = 0
    waiting: int = 0


def recover_expired_leases(
    engine: Engine,
    started_probe: Callable[[Sequence[uuid.UUID]], set[uuid.UUID]],
    *,
    grace_s: float,
    markers_since: Callable[[], datetime | None] | None = None,
) -> RecoveryReport:
    """Expired leases: never a blind re-send. A webhook of the attempt has already settled the
    contact (the applier matches in-progress contacts by attempt id); what is left is released
    when the send provably never started, or becomes Error after the grace period.

    ``markers_since`` (one call per pass, only when leases expired) says since when Redis
    holds every marker (``markers_trusted``)."""
    report = RecoveryReport()
    with engine.begin() as conn:
        leases = dispatch_db.expired_leases(conn)
        if not leases:
            return report
        now = sql.now(conn)
        started = started_probe([lease.attempt_id for lease in leases])
        # Asked after the probe: a restart between the two then shows, never the reverse
        # (markers lost after we asked, read as trustworthy).
        since = markers_since() if markers_since is not None else None
        settled: list[tuple[rules.ExpiredLease, ContactState, str]] = []
        for lease in leases:
            verdict = decide_expired_lease(
                lease,
                started=lease.attempt_id in started,
                now=now,
                grace_s=grace_s,
                markers_since=since,
            )
            if verdict is None:
                report.waiting += 1
                continue
            settled.append((lease, *verdict))
            if verdict[0] is C.ERROR:
                report.errored += 1
            else:
                report.released += 1
        if settled:
            dispatch_db.settle_leases(conn, settled)
    return report


def start_due_scheduled(engine: Engine) -> list[int]:
    started: list[int] = []
    with engine.begin() as conn:
        for campaign_id in dispatch_db.due_scheduled_campaigns(conn):
            campaigns_db.set_campaign_status(
                conn,
                campaign_id,
                CampaignStatus.SCHEDULED,
                CampaignStatus.RUNNING,
                source="schedule",
                extra={"started_at": sql.now(conn)},
            )
            started.append(campaign_id)
    return started


def complete_finished(engine: Engine) -> list[int]:
    """Running campaigns with nothing left in Initial, In progress or Retry scheduled."""
    done: list[int] = []
    with engine.begin() as conn:
        for campaign_id in dispatch_db.campaign_ids_by_status(conn, [CampaignStatus.RUNNING.value]):
            if dispatch_db.has_pending(conn, campaign_id):
                continue
            row = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
            if row is None or row["status"] != CampaignStatus.RUNNING.value:
                continue
            if dispatch_db.has_pending(conn, campaign_id):
                continue
            campaigns_db.set_campaign_status(
                conn,
                campaign_id,
                CampaignStatus.RUNNING,
                CampaignStatus.COMPLETED,
                source="dispatch",
                extra={"finished_at": sql.now(conn)},
            )
            done.append(campaign_id)
    return done


def campaigns_with_due_work(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        running = dispatch_db.campaign_ids_by_status(conn, [CampaignStatus.RUNNING.value])
        return [cid for cid in running if dispatch_db.next_due_in_s(conn, cid) == 0.0]
