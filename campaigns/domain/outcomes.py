"""What one send attempt means for its contact: the platform error table as data.

Pure (stdlib only): the client builds a ``SendResult``, ``classify`` turns it into a
``Decision`` that the dispatch service applies through the state table. Decisions are
made on the numeric error ``code`` (and the HTTP status when there is no code), never on
the message text, as provider-notes.md asks.

At-most-once is the promise to the people messaged, so every path that *might* have
reached the platform (read timeout, reset after the request was written, a 2xx without a
message id) is UNKNOWN, never RETRY: the contact waits for the webhook of its attempt.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "ERROR_CLASSES",
    "Decision",
    "ErrorClass",
    "OutcomeKind",
    "RetryPace",
    "SendResult",
    "TransportFailure",
    "backoff_seconds",
    "classify",
    "meaning_of",
]

# Longest reason kept: platform "details" can be long and the reason is stored per contact.
MAX_REASON_CHARS = 500


class OutcomeKind(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    SENDING_FAILED = "sending_failed"
    ERROR = "error"
    UNKNOWN = "unknown"


class TransportFailure(StrEnum):
    NONE = "none"
    # The request never left: connect error, connect timeout, pool timeout. Safe to retry.
    CONNECT = "connect"
    # The request was (or may have been) written: read timeout, reset, protocol error.
    # The platform may have accepted it, so the outcome is unknown.
    AFTER_SEND = "after_send"


class RetryPace(StrEnum):
    """How long a retryable class waits; see ``_PACES`` for the numbers."""

    SOON = "soon"  # throughput limit: the limiter slows down, the contact comes back quickly
    BACKOFF = "backoff"  # transient platform/network trouble: exponential backoff
    LATER = "later"  # pair rate or account-level limits: minutes, not seconds
    # A server error may answer a message the platform did take: wait for its status webhook,
    # which settles the Retry scheduled contact by attempt id, before sending it again.
    SETTLE = "settle"


# The first retry after a server error waits at least this long. Status webhooks of an accepted
# message come within seconds; a retry sooner than they do messages the person twice.
SETTLE_FLOOR_S = 30.0


@dataclass(frozen=True, slots=True)
class _Pace:
    floor_s: float  # never sooner than this (full jitter alone can give ~0)
    base_s: float
    cap_s: float


_PACES: Mapping[RetryPace, _Pace] = MappingProxyType(
    {
        RetryPace.SOON: _Pace(floor_s=1.0, base_s=1.0, cap_s=60.0),
        RetryPace.BACKOFF: _Pace(floor_s=1.0, base_s=2.0, cap_s=900.0),
        # Pair rate is ~1 message / 6 s per recipient, but the platform's own window is not
        # documented: a minute first, growing to 15 minutes.
        RetryPace.LATER: _Pace(floor_s=60.0, base_s=60.0, cap_s=900.0),
        RetryPace.SETTLE: _Pace(floor_s=SETTLE_FLOOR_S, base_s=2.0, cap_s=900.0),
    }
)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the client observed for one message. Built by the client, read by ``classify``."""

    wamid: str | None = None
    wa_id: str | None = None
    http_status: int | None = None
    error_code: int | None = None
    error_subcode: int | None = None
    error_title: str | None = None
    error_details: str | None = None
    transport: TransportFailure = TransportFailure.NONE

    @property
    def accepted(self) -> bool:
        """The platform answered 2xx with a message id: the message is ours to track."""
        return (
            self.transport is TransportFailure.NONE
            and self.http_status is not None
            and 200 <= self.http_status < 300
            and self.error_code is None
            and bool(self.wamid)
        )


@dataclass(frozen=True, slots=True)
class Decision:
    kind: OutcomeKind
    pause_campaign: bool = False
    slow_down: bool = False  # tell the sender's rate limiter to back off
    retry_after_s: float | None = None  # set only for RETRY
    reason: str = ""
    opted_out: bool = False  # the recipient stopped marketing messages (131050)


@dataclass(frozen=True, slots=True)
class ErrorClass:
    """One row of the provider-notes table."""

    kind: OutcomeKind
    meaning: str  # short, for operators (dashboard, stored reason)
    pace: RetryPace | None = None  # only for RETRY
    pause_campaign: bool = False
    slow_down: bool = False
    opted_out: bool = False


def _retry(meaning: str, pace: RetryPace, *, slow_down: bool = False) -> ErrorClass:
    return ErrorClass(OutcomeKind.RETRY, meaning, pace=pace, slow_down=slow_down)


def _failed(meaning: str, *, opted_out: bool = False) -> ErrorClass:
    return ErrorClass(OutcomeKind.SENDING_FAILED, meaning, opted_out=opted_out)


def _error(meaning: str, *, pause: bool = False) -> ErrorClass:
    return ErrorClass(OutcomeKind.ERROR, meaning, pause_campaign=pause)


_SOON, _BACKOFF, _LATER, _SETTLE = (
    RetryPace.SOON,
    RetryPace.BACKOFF,
    RetryPace.LATER,
    RetryPace.SETTLE,
)

ERROR_CLASSES: Mapping[int, ErrorClass] = MappingProxyType(
    {
        # Rate limits: the message was not sent, try again.
        130429: _retry("throughput limit of the sender number reached", _SOON, slow_down=True),
        131056: _retry("too many messages to this recipient in a short time (pair rate)", _LATER),
        80007: _retry("WhatsApp Business Account rate limit reached", _LATER, slow_down=True),
        4: _retry("app API call limit reached", _LATER, slow_down=True),
        613: _retry("API call rate or usage limit reached", _LATER, slow_down=True),
        # Server errors: perhaps not sent, perhaps sent (an overloaded edge answering for a
        # backend that took it), so the retry waits for a status webhook first.
        131000: _retry("generic platform error", _SETTLE),
        1: _retry("unknown platform error (API unknown)", _SETTLE),
        2: _retry("platform service temporarily unavailable", _SETTLE),
        131016: _retry("platform service overloaded or unavailable", _SETTLE),
        # The recipient cannot get it: final for this contact, the campaign goes on.
        131026: _failed("message undeliverable: not on WhatsApp, old app or terms not accepted"),
        1013: _failed("recipient is not a valid WhatsApp user (on-premises API)"),
        131049: _failed("not delivered to keep the ecosystem healthy (marketing cap per user)"),
        131050: _failed("recipient stopped marketing messages", opted_out=True),
        # Wrong for this contact or this message: Error, the campaign goes on.
        131047: _error("more than 24 h since the user's last reply: a template is required"),
        470: _error("outside the 24 h customer service window (on-premises API)"),
        131008: _error("required parameter missing"),
        131009: _error("parameter value invalid"),
        100: _error("invalid parameter"),
        132000: _error("template parameter count does not match the template"),
        # Every send of the campaign would fail the same way (or hurts the number): pause it.
        131048: _error("spam rate limit hit: sender quality issue", pause=True),
        132001: _error("template does not exist in this language", pause=True),
        132005: _error("template text too long after parameters", pause=True),
        132007: _error("template format breaks a policy", pause=True),
        132015: _error("template is paused (low quality)", pause=True),
        132016: _error("template is disabled", pause=True),
        190: _error("access token expired or invalid", pause=True),
        10: _error("permission denied for this app or number", pause=True),
        200: _error("permission missing for this operation", pause=True),
        3: _error("capability missing for this app", pause=True),
        131031: _error("business account locked", pause=True),
        368: _error("temporarily blocked for policy violations", pause=True),
        133010: _error("sender phone number not registered", pause=True),
    }
)

# Responses without a parsable error code, decided on the HTTP status alone.
_STATUS_WITHOUT_CODE: Mapping[int, ErrorClass] = MappingProxyType(
    {
        # Token, permission or URL (phone number id / version) problems: every send fails.
        401: _error("unauthorized: token missing, expired or invalid", pause=True),
        403: _error("forbidden: token lacks permission for this number", pause=True),
        404: _error("not found: wrong phone number id or API version", pause=True),
        429: _retry("rate limited by the platform", _SOON, slow_down=True),
    }
)


def meaning_of(code: int) -> str:
    """Operator-facing meaning of a platform error code (dashboard, reports)."""
    cls = ERROR_CLASSES.get(code)
    return cls.meaning if cls is not None else "unknown platform error"


def backoff_seconds(
    attempt_no: int, *, base: float = 2.0, cap: float = 900.0, rng: random.Random
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt_no-1))].

    Full jitter spreads the retries of a whole failed batch instead of bringing them back
    together. ``attempt_no`` is 1-based (the attempt that just failed).
    """
    if attempt_no < 1:
        raise ValueError("attempt_no is 1-based")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    # Clamped: 2.0**1024 overflows a float (and is past any sane cap anyway).
    exponent = min(attempt_no - 1, 1023)
    ceiling = min(cap, base * math.ldexp(1.0, exponent))
    return rng.uniform(0.0, ceiling)


_DEFAULT_RNG = random.Random()


def _reason(head: str, result: SendResult) -> str:
    detail = result.error_details or result.error_title
    text = f"{head}: {detail}" if detail else head
    return text[:MAX_REASON_CHARS]


def _decide(
    cls: ErrorClass,
    head: str,
    result: SendResult,
    attempt_no: int,
    max_attempts: int,
    rng: random.Random,
) -> Decision:
    reason = _reason(head, result)
    if cls.kind is not OutcomeKind.RETRY:
        return Decision(
            kind=cls.kind,
            pause_campaign=cls.pause_campaign,
            slow_down=cls.slow_down,
            reason=reason,
            opted_out=cls.opted_out,
        )
    if attempt_no >= max_attempts:
        # slow_down still holds: it is about the sender, not about this contact.
        return Decision(
            kind=OutcomeKind.ERROR,
            slow_down=cls.slow_down,
            reason=f"retries exhausted: {reason}"[:MAX_REASON_CHARS],
        )
    pace = _PACES[cls.pace or RetryPace.BACKOFF]
    delay = pace.floor_s + backoff_seconds(attempt_no, base=pace.base_s, cap=pace.cap_s, rng=rng)
    return Decision(
        kind=OutcomeKind.RETRY, slow_down=cls.slow_down, retry_after_s=delay, reason=reason
    )


_CONNECT_CLASS = _retry("connection failed before the request was sent", _BACKOFF)
_SERVER_ERROR_CLASS = _retry("platform server error", _SETTLE)


def classify(
    result: SendResult,
    attempt_no: int,
    max_attempts: int,
    rng: random.Random | None = None,
) -> Decision:
    """Decide what the attempt ``attempt_no`` (1-based) of at most ``max_attempts`` means."""
    if attempt_no < 1 or max_attempts < 1:
        raise ValueError("attempt_no and max_attempts are 1-based")
    rng = rng or _DEFAULT_RNG

    if result.transport is TransportFailure.AFTER_SEND:
        return Decision(OutcomeKind.UNKNOWN, reason=_reason("outcome unknown", result))
    if result.transport is TransportFailure.CONNECT:
        return _decide(_CONNECT_CLASS, "connect failure", result, attempt_no, max_attempts, rng)
    if result.accepted:
        return Decision(OutcomeKind.SENT, reason="accepted")

    status = result.http_status
    code = result.error_code
    if code is not None:
        cls = ERROR_CLASSES.get(code)
        if cls is not None:
            return _decide(cls, f"{code} {cls.meaning}", result, attempt_no, max_attempts, rng)
        if status is not None and status >= 500:
            head = f"HTTP {status} with unknown code {code}"
            return _decide(_SERVER_ERROR_CLASS, head, result, attempt_no, max_attempts, rng)
        return Decision(OutcomeKind.ERROR, reason=_reason(f"unknown platform error {code}", result))

    if status is None:
        # No response and no transport failure recorded: we cannot know, so never re-send.
        return Decision(OutcomeKind.UNKNOWN, reason=_reason("no response recorded", result))
    if 200 <= status < 300:
        # Accepted but no message id in the body: the platform may well send it.
        return Decision(
            OutcomeKind.UNKNOWN, reason=_reason(f"HTTP {status} without a message id", result)
        )
    if status >= 500:
        return _decide(_SERVER_ERROR_CLASS, f"HTTP {status}", result, attempt_no, max_attempts, rng)
    by_status = _STATUS_WITHOUT_CODE.get(status)
    if by_status is not None:
        head = f"HTTP {status} {by_status.meaning}"
        return _decide(by_status, head, result, attempt_no, max_attempts, rng)
    return Decision(
        OutcomeKind.ERROR, reason=_reason(f"HTTP {status} without an error code", result)
    )
