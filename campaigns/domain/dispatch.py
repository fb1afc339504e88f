"""Dispatch rules (pure): batch and group sizes, leases, what an unsent or expired claim
becomes, and the plain records the dispatch use cases pass between their steps."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from campaigns.domain.outcomes import Decision, SendResult
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
CHAIN_S = 10.0  # one dispatch task runs batches back to back for at most this long
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

    ``go`` False: the campaign is paused, none of them is marked and none may be sent.
    ``go`` True: every attempt of the group is marked started and may be sent once the
    event loop's clock (``loop.time()``) reaches its entry of ``due_at`` (its token's time),
    except the indexes in ``revoked``: lease recovery gave those contacts back already (the
    lease ran out before the gate reached them), so they must not be sent.
    """

    go: bool
    due_at: tuple[float, ...]
    revoked: frozenset[int] = frozenset()
    # The messaging tier refused these indexes (new recipients, the sender's window is full):
    # not marked, not sent. ``tier_free_at``: when its oldest entry leaves the window (epoch s).
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


def group_size(rate_per_s: float) -> int:
    """Messages per gate group: ~``GROUP_S`` of sending at the rate, at least one. Small at
    low rates (4 at 80/s), so a group never holds more than a blink of the campaign."""
    return max(1, math.ceil(rate_per_s * GROUP_S))


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


OUTCOME_UNKNOWN_STORE = (
    "outcome unknown: Redis restarted after the claim, so a missing started marker proves nothing"
)


# Slack on "claimed after Redis started": clock skew between the Postgres and Redis hosts,
# and Redis reports its uptime in whole seconds.
MARKER_CLOCK_SLACK_S = 5.0


def markers_trusted(lease: ExpiredLease, markers_since: datetime | None) -> bool:
    """Whether "no started marker" proves the send never started.

    Redis writes its AOF to disk once a second: a crash can lose the markers of the last
    second, i.e. of groups that did go out. ``markers_since`` is when the running Redis
    process started (None: not known, trusted as before). Only a lease claimed after that,
    with ``MARKER_CLOCK_SLACK_S`` to spare, can have had its marker written to this process
    and nowhere else; for an older lease the marker may have been lost.
    """
    if markers_since is None:
        return True
    if lease.claimed_at is None:
        return False
    return lease.claimed_at >= markers_since + timedelta(seconds=MARKER_CLOCK_SLACK_S)


def decide_expired_lease(
    lease: ExpiredLease,
    *,
    started: bool,
    now: datetime,
    grace_s: float,
    markers_since: datetime | None = None,
) -> tuple[ContactState, str] | None:
    """Released if the send provably never started; otherwise Error after the grace (no
    webhook came). A lease claimed before Redis last (re)started counts as started whatever
    the probe says (``markers_trusted``): its marker may be lost, and a release could be a
    second message."""
    trusted = markers_trusted(lease, markers_since)
    if not started and trusted:
        return released_to(lease.attempts), "released: the worker stopped before sending"
    if lease.lease_expires_at + timedelta(seconds=grace_s) <= now:
        return C.ERROR, OUTCOME_UNKNOWN if started else OUTCOME_UNKNOWN_STORE
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
    not_before: datetime | None = None  # released: due again then (its send window opens)


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    id: int
    campaign_id: int
    attempt_id: uuid.UUID
    attempts: int
    lease_expires_at: datetime
    # When the lease was claimed: recovery trusts a missing started marker only if Redis has
    # been up since then (a Redis crash may lose the last second of markers).
    claimed_at: datetime | None = None
