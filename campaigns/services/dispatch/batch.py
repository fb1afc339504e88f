"""Dispatch's database steps around the sends: claim a batch (one statement), and record
outcomes (one transaction for every campaign of a flush), with what the outcomes do to each
campaign (auto-pause, waits, completion)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine

from campaigns.domain.dispatch import (
    TIER_WINDOW_S,
    Attempt,
    CampaignPlan,
    ClaimedContact,
    RecordedOutcome,
    batch_size_for,
    lease_seconds,
    reason_after_batch,
    released_to,
    window_reason,
)
from campaigns.domain.outcomes import OutcomeKind, SendResult
from campaigns.domain.registry import Change, Learned, rule_for_code
from campaigns.domain.states import AUTO_PAUSE_PREFIX, CampaignStatus, ContactState
from campaigns.storage import admin as admin_db
from campaigns.storage import campaigns as campaigns_db
from campaigns.storage import dispatch as dispatch_db
from campaigns.storage import registry as registry_db
from campaigns.storage import sql

C = ContactState

# Where an answered send leaves its contact; UNKNOWN stays in progress: its webhook (or lease
# recovery) settles it.
_TARGET: dict[OutcomeKind, ContactState | None] = {
    OutcomeKind.SENT: C.SENT,
    OutcomeKind.RETRY: C.RETRY_SCHEDULED,
    OutcomeKind.SENDING_FAILED: C.SENDING_FAILED,
    OutcomeKind.ERROR: C.ERROR,
    OutcomeKind.UNKNOWN: None,
}


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
    completed: bool = False
    cancelled: bool = False  # the campaign is cancelled (its chains stop)
    held: int = 0  # accepted but held for a quality assessment
    suppressed: Counter[str] = field(default_factory=Counter)  # refused at send, by reason


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
        return dispatch_db.claim_due(
            conn, plan.id, limit=size, lease_s=lease, profile=plan.profile_fields
        )


def released(claimed: Sequence[ClaimedContact]) -> list[Attempt]:
    """Claims given back unsent (a batch claimed ahead when the chain stopped)."""
    return [Attempt(c, None, None, None, None) for c in claimed]


def recorded_outcome(attempt: Attempt) -> RecordedOutcome:
    """What the contact of one attempt becomes."""
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
    target = _TARGET[decision.kind]
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
        message_status=result.message_status,
        error_code=result.error_code,
        error_detail=detail,
        retry_after_s=decision.retry_after_s,
        at=attempt.answered_at if target is C.SENT else None,
    )


@dataclass
class _Tally:
    report: BatchReport
    pause_reason: str | None = None  # the first answer that pauses the campaign says why
    learned: list[tuple[str, Learned]] = field(default_factory=list)  # for the registry


def _tally(campaign_id: int, attempts: Sequence[Attempt]) -> _Tally:
    tally = _Tally(BatchReport(campaign_id=campaign_id, claimed=len(attempts)))
    report = tally.report
    for attempt in attempts:
        decision, result = attempt.decision, attempt.result
        if attempt.suppressed is not None:  # the registry refused it: Sending failed already
            report.suppressed[attempt.suppressed] += 1
            continue
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
        if result.held:
            report.held += 1
        if decision.pause_campaign and tally.pause_reason is None:
            tally.pause_reason = f"{AUTO_PAUSE_PREFIX}: {decision.reason}"
        fact = learned_from_answer(result, decision.kind, attempt.answered_at)
        if fact is not None:
            tally.learned.append((attempt.contact.phone_e164, fact))
    return tally


def learned_from_answer(
    result: SendResult, kind: OutcomeKind, at: datetime | None
) -> Learned | None:
    """What a send's answer teaches the registry (domain.registry.LEARNING): an accepted
    send its time and wa_id, 131026 / 1013 UNAVAILABLE, 131050 an opt-out."""
    if at is None:
        return None
    if kind is OutcomeKind.SENT:
        return Learned(Change.SENT, at, wa_id=result.wa_id)
    rule = rule_for_code(result.error_code)
    if rule is None:
        return None
    return Learned(rule.change, at, source=rule.source, code=result.error_code)


@dataclass(frozen=True)
class CampaignOutcomes:
    """What one flush records for one campaign: its attempts, and a pause decided outside
    them (a streak of answers, ``AnswerStreak``)."""

    plan: CampaignPlan
    attempts: Sequence[Attempt]
    pause_reason: str | None = None


def record_batch(
    engine: Engine,
    plan: CampaignPlan,
    attempts: Sequence[Attempt],
    *,
    tier_limit: int = 0,
    tier_window_s: float = TIER_WINDOW_S,
) -> BatchReport:
    """One campaign's outcomes (``record_outcomes`` for one)."""
    (report,) = record_outcomes(
        engine,
        [CampaignOutcomes(plan, attempts)],
        tier_limit=tier_limit,
        tier_window_s=tier_window_s,
    )
    return report


def record_outcomes(
    engine: Engine,
    flush: Sequence[CampaignOutcomes],
    *,
    tier_limit: int = 0,
    tier_window_s: float = TIER_WINDOW_S,
) -> list[BatchReport]:
    """Writes the outcomes of one or more campaigns in one transaction: one statement for
    every contact, one read of the campaigns' statuses and of which still have contacts to
    send, then per campaign only the writes its outcomes call for (a campaign row is locked
    only to change it). With a messaging limit, outcomes the tier cut short show the wait in
    the campaign's ``status_reason``; outcomes that sent clear that wait, and a send window's
    wait too (the chain that stops with contacts waiting shows it)."""
    ordered = sorted(flush, key=lambda f: f.plan.id)
    tallies = [_tally(f.plan.id, f.attempts) for f in ordered]
    with engine.begin() as conn:
        dispatch_db.record_outcomes(
            conn,
            [recorded_outcome(a) for f in ordered for a in f.attempts if a.suppressed is None],
        )
        learned = [fact for t in tallies for fact in t.learned]
        if learned:  # normally one statement for the flush's people
            registry_db.apply_sends(conn, learned)
        ids = [f.plan.id for f in ordered]
        states = dispatch_db.campaign_states(conn, ids)
        pending = dispatch_db.campaigns_with_pending(conn, ids)
        for outcomes, tally in zip(ordered, tallies, strict=True):
            plan, report = outcomes.plan, tally.report
            status, reason = states.get(plan.id, (plan.status, None))
            pause = tally.pause_reason or outcomes.pause_reason
            if pause and status is CampaignStatus.RUNNING:
                status = _auto_pause(conn, plan.id, pause, report)
            if status is CampaignStatus.RUNNING:
                _show_waits(conn, plan, reason, report, tier_limit, tier_window_s)
                if plan.id not in pending:
                    report.completed = complete_if_done(conn, plan.id)
            if status is CampaignStatus.CANCELLED:
                report.cancelled = True
                if report.outcomes["released"]:
                    # Claims given back after a cancel are cancelled like every other one.
                    admin_db.cancel_pending(conn, plan.id, detail="campaign cancelled")
    return [t.report for t in tallies]


def complete_if_done(conn: Connection, campaign_id: int) -> bool:
    """A running campaign with nothing left to send becomes Completed (checked again with
    its row locked); whether it did."""
    row = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
    if row is None or row["status"] != CampaignStatus.RUNNING.value:
        return False
    if dispatch_db.has_pending(conn, campaign_id):
        return False
    mark_completed(conn, campaign_id)
    return True


def _auto_pause(
    conn: Connection, campaign_id: int, reason: str, report: BatchReport
) -> CampaignStatus:
    """Pauses a running campaign (its row locked, the status checked again); its status."""
    row = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
    if row is None or row["status"] != CampaignStatus.RUNNING.value:
        return CampaignStatus(row["status"]) if row else CampaignStatus.RUNNING
    campaigns_db.set_campaign_status(
        conn,
        campaign_id,
        CampaignStatus.RUNNING,
        CampaignStatus.PAUSED,
        source="dispatch",
        detail=reason,
        extra={"status_reason": reason},
    )
    report.paused_reason = reason
    return CampaignStatus.PAUSED


def _show_waits(
    conn: Connection,
    plan: CampaignPlan,
    current: str | None,
    report: BatchReport,
    tier_limit: int,
    tier_window_s: float,
) -> None:
    """Updates a running campaign's tier or send-window wait after these outcomes (a write
    only when it changes)."""
    reason = reason_after_batch(
        current,
        sent=bool(report.outcomes[OutcomeKind.SENT.value]),
        tier_limit=tier_limit,
        tier_window_s=tier_window_s,
        tier_free_at=report.tier_free_at,
        windowed=plan.window is not None,
    )
    if reason != current:
        campaigns_db.set_status_reason(conn, plan.id, reason)


def mark_completed(conn: Connection, campaign_id: int) -> None:
    """A running campaign with nothing left to send becomes Completed."""
    campaigns_db.set_campaign_status(
        conn,
        campaign_id,
        CampaignStatus.RUNNING,
        CampaignStatus.COMPLETED,
        source="dispatch",
        extra={"finished_at": sql.now(conn)},
    )
