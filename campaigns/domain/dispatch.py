"""Dispatch rules (pure): batch and group sizes, leases, what an unsent or expired claim
becomes, and the plain records the dispatch use cases pass between their steps."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from campaigns.domain.outcomes import Decision, OutcomeKind, SendResult
from campaigns.domain.profiles import FieldDef
from campaigns.domain.send_window import SendWindow
from campaigns.domain.states import (
    CampaignStatus,
    ContactState,
)

C = ContactState

MAX_BATCH = 500
MIN_BATCH = 20
SLOW_DOWN_S = 1.0  # how long the sender's bucket stops after a 130429
GROUP_S = 0.05  # a gate group is this much sending at the campaign's rate
CHAIN_S = 10.0  # a chain (one campaign's coroutine in a dispatcher) yields after this long
TIER_WINDOW_S = 24 * 3600.0  # the messaging tier counts unique recipients over this window
TIER_WAIT_PREFIX = "waiting for the messaging tier"
WINDOW_WAIT_PREFIX = "waiting for the send window"


@dataclass(frozen=True, slots=True)
class SendJob:
    """One template message, everything the transport needs and nothing more."""

    sender_id: str
    to_e164: str
    template: str
    language: str
    body_params: tuple[str, ...]
    callback_data: str
    # The template's variable names, one per body parameter, when it uses named variables
    # (each parameter is sent with its ``parameter_name``); empty: positional ({{1}}, ...).
    param_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupGrant:
    """The gate's answer for a group of attempts.

    ``go`` False: the campaign's pause flag is up: none of them may be sent.
    ``go`` True: the group's tokens are booked; each attempt may be sent once the event
    loop's clock (``loop.time()``) reaches its entry of ``due_at`` (its token's time) and it
    passed the start statement (Postgres, the authority on what may leave).
    """

    go: bool
    due_at: tuple[float, ...]
    # The messaging tier refused these indexes (new recipients, the sender's window is full):
    # not sent. ``tier_free_at``: when its oldest entry leaves the window (epoch s).
    refused: frozenset[int] = frozenset()
    tier_free_at: float | None = None


@dataclass(frozen=True, slots=True)
class TierRoom:
    """A sender number's messaging tier now: how many new recipients it may still reach
    (``room``) and, when that is 0, when the oldest entry leaves the window (epoch s)."""

    room: int
    free_at: float | None = None


def batch_size_for(rate_per_s: float) -> int:
    """About two seconds of sending: big enough to amortise claim and record, small enough
    that a killed worker strands few contacts and a slow campaign's lease stays short."""
    return max(MIN_BATCH, min(MAX_BATCH, math.ceil(rate_per_s * 2)))


MAX_GROUP_S = 0.1  # however slow the start statement, a group never holds more than this


def group_size(rate_per_s: float, start_s: float = 0.0) -> int:
    """Messages per gate group: ~``GROUP_S`` of sending at the rate, at least one. Small at
    low rates (4 at 80/s), so a group never holds more than a blink of the campaign.

    ``start_s``: how long the start statement takes lately. A chain opens its groups one
    after the other, each after the previous one's start statement returned, so a group
    must cover at least that much sending or the chain falls behind its rate: when Postgres
    is slow a group grows to the statement's time (at most ``MAX_GROUP_S``)."""
    covers = min(MAX_GROUP_S, max(GROUP_S, start_s))
    return max(1, math.ceil(rate_per_s * covers - 1e-9))


def lease_seconds(batch: int, rate_per_s: float, *, margin_s: float) -> float:
    """Time a batch may take at its rate, twice over, plus a margin for slow answers."""
    return 2.0 * batch / rate_per_s + margin_s


def released_to(attempts_after_claim: int) -> ContactState:
    """Where an unsent claim goes back to: Initial if it never had an attempt before."""
    return C.INITIAL if attempts_after_claim <= 1 else C.RETRY_SCHEDULED


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    id: int
    status: CampaignStatus
    template: str
    language: str
    body_variables: tuple[str, ...]
    sender_id: str
    rate_per_s: float
    max_attempts: int
    window: SendWindow | None = None  # daily send window in the recipient's local time
    named_variables: bool = False  # body_variables are the template's variable names
    require_opt_in: bool = False  # the registry refuses people without an opt-in
    awaiting_check: bool = False  # --check-contacts: no send before its check is done
    # Template variables that are fields of the newest profile schema: a contact without
    # its own value for one gets its profile's, read in the claim.
    profile_fields: tuple[FieldDef, ...] = ()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed contact after the send phase. ``result`` None: released unsent."""

    contact: ClaimedContact
    result: SendResult | None
    decision: Decision | None
    answered_at: datetime | None
    latency_s: float | None
    tier_free_at: float | None = None  # released unsent because the messaging tier was full
    opens_at: datetime | None = None  # released unsent: its send window is closed until then
    # Not sent: the registry refused the person when its group opened (reason code); the
    # contact is Sending failed already.
    suppressed: str | None = None


@dataclass(frozen=True, slots=True)
class Starts:
    """What the send ledger's start statement did with a gate group: the contacts it marked
    started (they may be sent now), and those whose person the registry refused at that
    moment (Sending failed already, contact id -> reason code; no request may be made).
    Any other contact of the group was not started (paused, its lease gone): it goes back."""

    started: frozenset[int] = frozenset()
    refused: Mapping[int, str] = field(default_factory=dict)


def tier_reason(limit: int, window_s: float, free_at: float) -> str:
    window = f"{window_s / 3600:g} h" if window_s % 3600 == 0 else f"{window_s:g} s"
    at = datetime.fromtimestamp(free_at, UTC).isoformat(timespec="seconds")
    return f"{TIER_WAIT_PREFIX}: {limit:,} unique recipients per {window}, next slot at {at}"


def window_reason(opens_at: datetime) -> str:
    at = opens_at.astimezone(UTC).isoformat(timespec="seconds")
    return f"{WINDOW_WAIT_PREFIX}: next opening at {at}"


def reason_after_batch(
    current: str | None,
    *,
    sent: bool,
    tier_limit: int,
    tier_window_s: float,
    tier_free_at: float | None,
    windowed: bool,
) -> str | None:
    """A running campaign's ``status_reason`` after a batch (``current`` before it).

    With a messaging limit, a batch the tier cut short (``tier_free_at``) shows the tier's
    wait, and one that sent clears it; a batch that sent clears a send window's wait too."""
    reason = current
    if tier_limit:
        if tier_free_at is not None:
            reason = tier_reason(tier_limit, tier_window_s, tier_free_at)
        elif sent and (current or "").startswith(TIER_WAIT_PREFIX):
            reason = None  # sending again
    if windowed and sent and (current or "").startswith(WINDOW_WAIT_PREFIX):
        reason = None  # a window opened: sending again
    return reason


OUTCOME_UNKNOWN = "outcome unknown: the worker stopped after the send started"
RELEASED_UNSTARTED = "released: the worker stopped before sending"


def decide_expired_lease(
    lease: ExpiredLease, *, now: datetime, grace_s: float
) -> tuple[ContactState, str] | None:
    """What an expired lease becomes, from the send ledger alone (Postgres, never Redis).

    Without a start mark the attempt never passed the start statement, so nothing of it left:
    released (Initial / Retry scheduled, the attempt not counted), whatever happened to Redis.
    With one, its request may have reached the platform: it waits ``grace_s`` after the lease
    for its webhook (which settles it by attempt id), then becomes Error "outcome unknown".
    None: keep waiting."""
    if not lease.started:
        return released_to(lease.attempts), RELEASED_UNSTARTED
    if lease.lease_expires_at + timedelta(seconds=grace_s) <= now:
        return C.ERROR, OUTCOME_UNKNOWN
    return None


def fair_rates(running: Sequence[tuple[int, str, float]], sender_max: float) -> dict[int, float]:
    """Each running campaign's pacing rate: its own, scaled down in proportion when the
    campaigns of one sender number ask for more than ``sender_max`` together.

    ``running``: (campaign id, sender id, configured rate) of the campaigns with work due.
    A sender's total never passes ``sender_max``; below it every campaign keeps its rate."""
    total: dict[str, float] = {}
    for _, sender, rate in running:
        total[sender] = total.get(sender, 0.0) + rate
    out: dict[int, float] = {}
    for campaign_id, sender, rate in running:
        share = min(1.0, sender_max / total[sender]) if total[sender] > 0 else 1.0
        out[campaign_id] = rate * share
    return out


@dataclass(slots=True)
class AnswerStreak:
    """One campaign's answers in a row that say the campaign, not a contact, is wrong.

    ``unknown``: consecutive answers with a code the error table does not know (any other
    answer resets it). ``parameter_only``: every answer so far refused the parameters (the
    template and the data do not fit); any other answer ends that for good."""

    unknown: int = 0
    answers: int = 0
    parameter_only: bool = True

    def note(self, decision: Decision, result: SendResult, *, pause_after: int) -> str | None:
        """Counts one answer; the pause reason once a streak reaches ``pause_after``."""
        if decision.kind is OutcomeKind.UNKNOWN:
            return None  # no answer: says nothing about the campaign
        self.answers += 1
        self.parameter_only = self.parameter_only and decision.parameter_problem
        self.unknown = self.unknown + 1 if decision.unknown_error else 0
        if pause_after <= 0:
            return None
        code = "" if result.error_code is None else f" {result.error_code}"
        message = " - ".join(x for x in (result.error_title, result.error_details) if x)
        said = f": {message}"[:300] if message else ""
        if self.unknown >= pause_after:
            return f"{self.unknown} answers in a row with an unknown error{code}{said}"
        if self.parameter_only and self.answers >= pause_after:
            return (
                f"the first {self.answers} answers all refused the template parameters"
                f"{code}{said} (the template and the data do not fit)"
            )
        return None


@dataclass(frozen=True, slots=True)
class ClaimedContact:
    id: int
    from_state: ContactState
    phone_e164: str
    variables: dict[str, str]
    attempt_no: int  # 1-based: the attempt this claim makes
    attempt_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """What one claimed contact became. ``state`` None: still in progress (outcome unknown)."""

    contact_id: int
    attempt_id: uuid.UUID
    state: ContactState | None
    reason: str | None = None
    wamid: str | None = None
    wa_id: str | None = None
    error_code: int | None = None
    error_detail: str | None = None
    retry_after_s: float | None = None
    at: datetime | None = None  # when the platform answered (sent_at)
    released: bool = False  # a claim given back unsent: the attempt did not happen
    message_status: str | None = None  # the send answer's (held_for_quality_assessment, ...)
    not_before: datetime | None = None  # released: due again then (its send window opens)


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    id: int
    campaign_id: int
    attempt_id: uuid.UUID
    attempts: int
    lease_expires_at: datetime
    # The attempt passed the start statement (``contacts.send_started_at``): it may have
    # reached the platform.
    started: bool = False
