"""Retrying only the failed (pure): which failed contacts of a campaign an operator's retry
queues again, which it skips and why, and the answer it gives.

A retry names the states to take (Error, Sending failed, or both) and may narrow them by
the contact's reason code and platform error code. Of the contacts that match:

- a contact whose person the registry refuses now (blocked, unavailable, opted out) is
  never retried, whatever the filters: it is skipped with that reason;
- an Error "outcome unknown" contact (the platform may have taken its message) is queued
  only when the operator asks for it (``include_unknown``), and the answer then warns that
  those people may get the message twice; otherwise it is skipped as ``outcome_unknown``;
- every other one goes back to Retry scheduled, due now, with its attempt count reset: a
  retry starts a new round of at most ``max_attempts`` sends (see :data:`RETRY_DETAIL`).

``campaigns.storage.retry`` applies the same rule in one statement; the integration tests
check it against :func:`verdict`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from campaigns.domain.refusals import Refusal
from campaigns.domain.registry import Standing, Suppression, suppression
from campaigns.domain.states import RETRYABLE_CONTACT_STATES, ContactState

C = ContactState

OUTCOME_UNKNOWN_PREFIX = "outcome unknown"
"""How the ``reason`` of an Error contact whose send may have reached the platform starts
(``campaigns.domain.dispatch.OUTCOME_UNKNOWN`` and the lease recovery's other texts)."""

RETRY_DETAIL = "retry by admin"
"""The event detail (and the contact's new ``reason``) of a retried contact."""

INT4_MAX = 2**31 - 1  # contacts.error_code is a Postgres integer
MAX_FILTER_ITEMS = 100


class InvalidRetryFilter(Refusal):
    """A retry filter that names something a retry cannot take (422); nothing changed."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_retry_filter", message)


class Verdict(StrEnum):
    """What a retry does with a contact that matches its filter: queued, or skipped for a
    reason (the answer's ``skipped`` keys, :data:`SKIPS`)."""

    QUEUED = "queued"
    OPTED_OUT = "opted_out"
    UNAVAILABLE = "unavailable"
    BLOCKED = "blocked"
    OUTCOME_UNKNOWN = "outcome_unknown"


SKIPS: tuple[Verdict, ...] = tuple(v for v in Verdict if v is not Verdict.QUEUED)


# The registry's refusals that stop a retry. not_opted_in is not one: the send-time check
# applies it again as each group opens (as for every contact of a require-opt-in campaign).
_REFUSED_PERSON: Mapping[Suppression, Verdict] = {
    Suppression.BLOCKED: Verdict.BLOCKED,
    Suppression.UNAVAILABLE: Verdict.UNAVAILABLE,
    Suppression.OPTED_OUT: Verdict.OPTED_OUT,
}

REASON_CODES: frozenset[str] = frozenset(s.value for s in Suppression)
"""The reason codes a failed contact can have (``contacts.reason_code``): the registry's."""


@dataclass(frozen=True, slots=True)
class RetryFilter:
    """Which failed contacts a retry takes; an empty code set means any code (or none)."""

    states: frozenset[ContactState] = RETRYABLE_CONTACT_STATES
    reason_codes: frozenset[str] = field(default_factory=frozenset)
    error_codes: frozenset[int] = field(default_factory=frozenset)
    include_unknown: bool = False


def _listed(values: Iterable[object] | None, what: str) -> list[object]:
    items = list(values or ())
    if len(items) > MAX_FILTER_ITEMS:
        raise InvalidRetryFilter(f"{what}: at most {MAX_FILTER_ITEMS} values")
    return items


def _state(value: object) -> ContactState:
    allowed = sorted(s.value for s in RETRYABLE_CONTACT_STATES)
    if isinstance(value, str) and value.strip() in allowed:
        return ContactState(value.strip())
    raise InvalidRetryFilter(f"state {value!r} cannot be retried: name {' and/or '.join(allowed)}")


def _reason_code(value: object) -> str:
    if isinstance(value, str) and value.strip() in REASON_CODES:
        return value.strip()
    raise InvalidRetryFilter(
        f"reason code {value!r} is not one a failed contact has (known: "
        f"{', '.join(sorted(REASON_CODES))})"
    )


_DIGITS = re.compile(r"^\s*\d{1,10}\s*$")


def _error_code(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        code = value
    elif isinstance(value, str) and _DIGITS.match(value):
        code = int(value)
    else:
        raise InvalidRetryFilter(f"error code {value!r} is not a number (e.g. 131049)")
    if not 0 <= code <= INT4_MAX:
        raise InvalidRetryFilter(f"error code {value!r} is out of range (0 to {INT4_MAX})")
    return code


def retry_filter(
    *,
    states: Iterable[object] | None = None,
    reason_codes: Iterable[object] | None = None,
    error_codes: Iterable[object] | None = None,
    include_unknown: bool = False,
) -> RetryFilter:
    """The filter of a retry as the operator gave it (CLI or HTTP); refuses what is not one.

    Absent or empty lists mean "no narrowing": states default to Error and Sending failed."""
    picked = {_state(v) for v in _listed(states, "states")}
    return RetryFilter(
        states=frozenset(picked) or RETRYABLE_CONTACT_STATES,
        reason_codes=frozenset(_reason_code(v) for v in _listed(reason_codes, "reason codes")),
        error_codes=frozenset(_error_code(v) for v in _listed(error_codes, "error codes")),
        include_unknown=include_unknown,
    )


def split_list(values: Iterable[str]) -> list[str]:
    """Command-line lists: ``--state error,sending_failed`` and repeated options alike."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@dataclass(frozen=True, slots=True)
class FailedContact:
    """What the rule reads of a contact and of its person."""

    state: ContactState
    reason: str | None = None
    reason_code: str | None = None
    error_code: int | None = None
    person: Standing = field(default_factory=Standing)


def outcome_unknown(contact: FailedContact) -> bool:
    """An Error whose send may have reached the platform: a retry could message twice."""
    return contact.state is C.ERROR and (contact.reason or "").startswith(OUTCOME_UNKNOWN_PREFIX)


def matches(contact: FailedContact, rule: RetryFilter) -> bool:
    return (
        contact.state in rule.states
        and (not rule.reason_codes or contact.reason_code in rule.reason_codes)
        and (not rule.error_codes or contact.error_code in rule.error_codes)
    )


def verdict(contact: FailedContact, rule: RetryFilter) -> Verdict | None:
    """None: the retry does not take this contact; else queued (back to Retry scheduled) or
    skipped with a reason (it stays as it is)."""
    if not matches(contact, rule):
        return None
    refused = suppression(contact.person, require_opt_in=False)
    if refused is not None:
        return _REFUSED_PERSON[refused]
    if outcome_unknown(contact) and not rule.include_unknown:
        return Verdict.OUTCOME_UNKNOWN
    return Verdict.QUEUED


@dataclass(frozen=True, slots=True)
class Tally:
    """The counts of one retry: queued per state, skipped per reason."""

    queued: Mapping[ContactState, int]
    skipped: Mapping[Verdict, int]
    unknown_queued: int  # of the queued, how many had an unknown outcome

    @property
    def total(self) -> int:
        return sum(self.queued.values())


def tally(rows: Iterable[tuple[ContactState, Verdict, bool, int]]) -> Tally:
    """Counts from ``(state, verdict, outcome unknown, n)`` rows (the statement's result)."""
    queued = dict.fromkeys(sorted(RETRYABLE_CONTACT_STATES), 0)
    skipped = dict.fromkeys(SKIPS, 0)
    unknown = 0
    for state, outcome, was_unknown, n in rows:
        if outcome is Verdict.QUEUED:
            queued[state] += n
            unknown += n if was_unknown else 0
        else:
            skipped[outcome] += n
    return Tally(queued, skipped, unknown)


def warning(counts: Tally) -> str | None:
    """The answer's warning when outcome-unknown contacts were queued (include_unknown)."""
    n = counts.unknown_queued
    if not n:
        return None
    who = "1 queued contact" if n == 1 else f"{n} queued contacts"
    return (
        f"{who} had an unknown outcome: the platform may already have delivered "
        "the message, so these people may receive it twice"
    )
