"""What a delivery status webhook does to a contact, and which replies opt a phone out.

Pure: no I/O. The storage layer locks the contacts a batch of statuses touches, folds each
contact's statuses through :func:`settle` and writes the result; this module is therefore the
one place the webhook rules live, and the property tests here cover what gets written.

The rules (design.md, "Contact states"):

- ``sent`` / ``delivered`` / ``read`` only move forward: Sent < Delivered < Read.
- ``failed`` becomes Delivery failed only before Delivered.
- In progress (the worker has not committed Sent yet, or died with the lease) may go straight
  to any of them: the platform took the message, so the webhook settles it.
- A late or duplicate status fills its own timestamp (``sent_at``, ``delivered_at``,
  ``read_at``) when it is still empty and changes nothing else.
- Retry scheduled settles the same way: its attempt id is the one the status names, so the
  platform took the send whose answer looked like a failure, and the retry must not happen.
- A contact in a state no webhook settles (Error, Removed, Canceled by admin, ...) does not
  change at all: the status is counted as late.

Which moves are legal is not restated here: :func:`decide` asks the one transition table in
:mod:`campaigns.domain.states`, whose webhook targets are exactly the forward moves above.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Literal

from campaigns.domain.states import CONTACT_TRANSITIONS, ContactState, contact_transition

__all__ = [
    "DEFAULT_OPT_OUT_WORDS",
    "PROGRESS_RANK",
    "WEBHOOK_SETTLED_STATES",
    "WEBHOOK_TARGETS",
    "Decision",
    "Delivery",
    "Effect",
    "StatusEvent",
    "StatusKind",
    "Step",
    "decide",
    "give_up_retry",
    "is_opt_out",
    "opt_out_numbers",
    "opt_out_words",
    "retry_delay_s",
    "settle",
    "status_time",
]

C = ContactState


class StatusKind(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    OTHER = "other"  # e.g. "deleted": stored with the raw body, acted on by nobody

    @classmethod
    def parse(cls, raw: str) -> StatusKind:
        kind = _KINDS.get(raw)  # the platform's own spelling: one dict lookup
        if kind is None:
            kind = _KINDS.get(raw.strip().lower(), cls.OTHER)
        return kind


_KINDS = {kind.value: kind for kind in StatusKind}


class Effect(StrEnum):
    MOVED = "moved"  # the contact changed state
    FILLED = "filled"  # a late status filled its empty timestamp, nothing else
    LATE = "late"  # nothing changed: a duplicate, or a state no webhook settles
    IGNORED = "ignored"  # a status kind the rules do not act on


TimestampColumn = Literal["sent_at", "delivered_at", "read_at", "failed_at"]

STAMP_OF: Mapping[StatusKind, TimestampColumn] = {
    StatusKind.SENT: "sent_at",
    StatusKind.DELIVERED: "delivered_at",
    StatusKind.READ: "read_at",
    StatusKind.FAILED: "failed_at",
}

TARGET_OF: Mapping[StatusKind, ContactState] = {
    StatusKind.SENT: C.SENT,
    StatusKind.DELIVERED: C.DELIVERED,
    StatusKind.READ: C.READ,
    StatusKind.FAILED: C.DELIVERY_FAILED,
}

WEBHOOK_TARGETS: frozenset[ContactState] = frozenset(TARGET_OF.values())
"""The only states a status webhook ever writes."""

WEBHOOK_SETTLED_STATES: frozenset[ContactState] = frozenset(
    {C.SENT, C.DELIVERED, C.READ, C.DELIVERY_FAILED}
)
"""States whose message the platform accepted: a late status still records its timestamp."""

PROGRESS_RANK: Mapping[ContactState, int] = {
    C.IN_PROGRESS: 0,
    C.RETRY_SCHEDULED: 0,
    C.SENT: 1,
    C.DELIVERED: 2,
    C.READ: 3,
    C.DELIVERY_FAILED: 3,
}
"""Delivery progress: a webhook never lowers it (Delivery failed is as final as Read)."""


@dataclass(frozen=True, slots=True)
class Decision:
    target: ContactState | None  # the new state, or None: the state stays
    fill: TimestampColumn | None  # the timestamp this status records when it is empty


def decide(current: ContactState, status: StatusKind) -> Decision:
    """What one status does to a contact in state ``current``."""
    if status is StatusKind.OTHER:
        return Decision(None, None)
    target = TARGET_OF[status]
    if target in CONTACT_TRANSITIONS[current]:
        return Decision(target, STAMP_OF[status])
    if current in WEBHOOK_SETTLED_STATES and status is not StatusKind.FAILED:
        # Late or duplicate: read before delivered, sent after failed, the same one twice.
        return Decision(None, STAMP_OF[status])
    # failed after Delivered (ignored by the rules), or a contact webhooks do not settle.
    return Decision(None, None)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the rules read and write of a contact."""

    state: ContactState
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    failed_at: datetime | None = None
    error_code: int | None = None
    error_detail: str | None = None


@dataclass(frozen=True, slots=True)
class StatusEvent:
    kind: StatusKind
    at: datetime
    error_code: int | None = None
    error_detail: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One status applied to one contact: what it did, from which state to which."""

    event: StatusEvent
    effect: Effect
    from_state: ContactState
    to_state: ContactState


_KIND_ORDER = {kind: i for i, kind in enumerate(StatusKind)}
# decide() for every pair, computed once: settle() runs for every status of every batch.
_DECISIONS = {(state, kind): decide(state, kind) for state in ContactState for kind in StatusKind}


def _apply(delivery: Delivery, event: StatusEvent) -> tuple[Delivery, Effect]:
    decision = _DECISIONS[delivery.state, event.kind]
    target = decision.target
    fill = decision.fill
    if fill is not None and getattr(delivery, fill) is not None:
        fill = None  # a timestamp once recorded is kept: the first report of it wins
    if target is None and fill is None:
        return delivery, Effect.IGNORED if event.kind is StatusKind.OTHER else Effect.LATE
    failed = target is C.DELIVERY_FAILED
    after = Delivery(
        state=delivery.state if target is None else contact_transition(delivery.state, target),
        sent_at=event.at if fill == "sent_at" else delivery.sent_at,
        delivered_at=event.at if fill == "delivered_at" else delivery.delivered_at,
        read_at=event.at if fill == "read_at" else delivery.read_at,
        failed_at=event.at if fill == "failed_at" else delivery.failed_at,
        error_code=event.error_code if failed else delivery.error_code,
        error_detail=event.error_detail if failed else delivery.error_detail,
    )
    return after, Effect.FILLED if target is None else Effect.MOVED


def settle(delivery: Delivery, events: Iterable[StatusEvent]) -> tuple[Delivery, list[Step]]:
    """Applies a contact's statuses (one batch) and returns the result and one step each.

    The rules make the result independent of the order; the statuses are still applied in
    their logical order (sent, delivered, read, failed; then time) so the event log reads
    In progress -> Sent -> Delivered rather than an arbitrary arrival order.
    """
    ordered = sorted(events, key=lambda e: (_KIND_ORDER[e.kind], e.at))
    steps: list[Step] = []
    for event in ordered:
        before = delivery.state
        delivery, effect = _apply(delivery, event)
        steps.append(Step(event, effect, before, delivery.state))
    return delivery, steps


def status_time(raw: str | None, fallback: datetime) -> datetime:
    """A status ``timestamp`` (Unix seconds as a string) as an aware datetime."""
    if raw is None:
        return fallback
    return _unix_seconds(raw) or fallback


@lru_cache(maxsize=4096)  # a batch's statuses share a few distinct seconds
def _unix_seconds(raw: str) -> datetime | None:
    text = raw.strip()
    if text.isdigit() and len(text) <= 11:  # seconds until year 5138; longer is garbage
        return datetime.fromtimestamp(int(text), tz=UTC)
    return None


# --------------------------------------------------------------------------- retries


def retry_delay_s(tries: int, *, base_s: float, cap_s: float) -> float:
    """Backoff before the next try of a status no contact matched yet (``tries`` made)."""
    return float(min(cap_s, base_s * 2 ** max(0, tries - 1)))


def give_up_retry(tries: int, age_s: float, *, max_tries: int, max_age_s: float) -> bool:
    """An unmatched status is reported to operators after ``max_tries`` or ``max_age_s``."""
    return tries >= max_tries or age_s >= max_age_s


# --------------------------------------------------------------------------- opt-out

DEFAULT_OPT_OUT_WORDS: Sequence[str] = ("STOP", "UNSUBSCRIBE")

# Surrounding punctuation people type around the word ("Stop!", "STOP.", "'unsubscribe'").
_STRIP = " \t\r\n.,;:!?¡¿'\"`´‘’“”()[]{}<>-_*~"


def _normalise(text: str) -> str:
    return " ".join(text.split()).strip(_STRIP).casefold()


def opt_out_words(raw: str | Iterable[str]) -> frozenset[str]:
    """Configured words (comma-separated or a list), normalised like the replies."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    return frozenset(word for word in (_normalise(item) for item in items) if word)


def opt_out_numbers(wa_id: str) -> frozenset[str]:
    """The E.164 numbers a reply from ``wa_id`` opts out.

    The wa_id itself, and the number the business may have sent to when the platform's
    WhatsApp id differs from it (provider-notes.md, "Numbers"): Mexico's legacy ``1`` after
    52, Brazil's mobile 9th digit, Argentina's ``9`` after 54. Uploads are checked by E.164,
    so each form is listed.
    """
    d = "".join(ch for ch in wa_id if ch.isdigit())
    if not d:
        return frozenset()
    out = {"+" + d}
    if d.startswith("521") and len(d) == 13:
        out.add("+52" + d[3:])
    elif d.startswith("52") and len(d) == 12:
        out.add("+521" + d[2:])
    if d.startswith("55") and len(d) == 13 and d[4] == "9":
        out.add("+" + d[:4] + d[5:])
    elif d.startswith("55") and len(d) == 12 and d[4] in "6789":  # a mobile without its 9
        out.add("+" + d[:4] + "9" + d[4:])
    if d.startswith("549") and len(d) == 13:
        out.add("+54" + d[3:])
    elif d.startswith("54") and len(d) == 12:
        out.add("+549" + d[2:])
    return frozenset(out)


def is_opt_out(text: str | None, words: Iterable[str] = DEFAULT_OPT_OUT_WORDS) -> bool:
    """True when the whole reply is one of the opt-out words (case and spacing ignored).

    The whole message must match: "stop sending me the old offer" is a conversation, not
    an unsubscribe, and an opt-out must not be inferred from a word inside a sentence.
    """
    if not text:
        return False
    wanted = words if isinstance(words, frozenset) else opt_out_words(words)
    return _normalise(text) in wanted


REASON_CHARS = 500
"""Reasons and error details stored with a webhook or a status are cut to this length."""
