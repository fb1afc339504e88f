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
    "PERMISSION_RANGE",
    "Decision",
    "ErrorClass",
    "ErrorFamily",
    "OutcomeKind",
    "RetryPace",
    "SendResult",
    "TransportFailure",
    "backoff_seconds",
    "classify",
    "meaning_of",
]

HELD_FOR_QUALITY_ASSESSMENT = "held_for_quality_assessment"

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
    # The answer's contact may carry a business-scoped user id (``user_id``) beside or
    # instead of ``wa_id`` (a user with a username).
    user_id: str | None = None
    # messages[0].message_status of an accepted send: "accepted",
    # "held_for_quality_assessment" or "paused" (None: the answer had none).
    message_status: str | None = None
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

    @property
    def held(self) -> bool:
        """Accepted but held by the platform for a quality assessment (may never go out)."""
        return self.message_status == HELD_FOR_QUALITY_ASSESSMENT


class ErrorFamily(StrEnum):
    """What kind of problem an answer shows: how far it reaches beyond this one contact."""

    RATE_LIMIT = "rate_limit"  # a limit of the sender, the app or the recipient pair
    TRANSIENT = "transient"  # server trouble or a failed connection: try again
    RECIPIENT = "recipient"  # this recipient cannot get it: final for the contact
    ACCOUNT = "account"  # account, payment, permission, token or sender number: every send fails
    TEMPLATE = "template"  # the template cannot be sent at all
    # The parameters of this send: Error for the contact. Every send of a campaign failing
    # this way means the template and the data do not fit: dispatch pauses then.
    PARAMETER = "parameter"
    MESSAGE = "message"  # wrong for this message or contact only
    # A code the table does not know (or a 4xx without one): Error for the contact, but
    # never a plain one: dispatch pauses after UNKNOWN_ERROR_PAUSE_AFTER in a row.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Decision:
    kind: OutcomeKind
    pause_campaign: bool = False
    slow_down: bool = False  # tell the sender's rate limiter to back off
    retry_after_s: float | None = None  # set only for RETRY
    reason: str = ""
    opted_out: bool = False  # the recipient stopped marketing messages (131050)
    family: ErrorFamily | None = None  # None: no error (sent, or outcome unknown)

    @property
    def unknown_error(self) -> bool:
        """An answer the error table does not know: counted by dispatch, in a row."""
        return self.family is ErrorFamily.UNKNOWN

    @property
    def parameter_problem(self) -> bool:
        """The platform refused this send's parameters (132000, 132012, 132018, ...)."""
        return self.family is ErrorFamily.PARAMETER


@dataclass(frozen=True, slots=True)
class ErrorClass:
    """One row of the error table."""

    kind: OutcomeKind
    meaning: str  # short, for operators (dashboard, stored reason)
    family: ErrorFamily
    pace: RetryPace | None = None  # only for RETRY
    pause_campaign: bool = False
    slow_down: bool = False
    opted_out: bool = False


_F = ErrorFamily


def _retry(
    meaning: str, pace: RetryPace, *, slow_down: bool = False, family: ErrorFamily = _F.RATE_LIMIT
) -> ErrorClass:
    return ErrorClass(OutcomeKind.RETRY, meaning, family, pace=pace, slow_down=slow_down)


def _failed(meaning: str, *, opted_out: bool = False) -> ErrorClass:
    return ErrorClass(OutcomeKind.SENDING_FAILED, meaning, _F.RECIPIENT, opted_out=opted_out)


def _error(meaning: str, family: ErrorFamily = _F.MESSAGE) -> ErrorClass:
    return ErrorClass(OutcomeKind.ERROR, meaning, family)


def _pause(meaning: str, family: ErrorFamily = _F.ACCOUNT) -> ErrorClass:
    """Every send of the campaign would fail the same way (or it hurts the number)."""
    return ErrorClass(OutcomeKind.ERROR, meaning, family, pause_campaign=True)


def _server(meaning: str) -> ErrorClass:
    return _retry(meaning, RetryPace.SETTLE, family=_F.TRANSIENT)


def _param(meaning: str) -> ErrorClass:
    return _error(meaning, _F.PARAMETER)


_SOON, _LATER = RetryPace.SOON, RetryPace.LATER

# Meta's error-code reference (Cloud API), grouped by what dispatch does. Codes of the
# registration endpoint (133xxx) are listed too: a send can only meet them when the sender
# number's registration is broken, which stops every send of that number.
_CODES: dict[int, ErrorClass] = {
    # Rate limits: the message was not sent, try again.
    130429: _retry("throughput limit of the sender number reached", _SOON, slow_down=True),
    131056: _retry("too many messages to this recipient in a short time (pair rate)", _LATER),
    80007: _retry("WhatsApp Business Account rate limit reached", _LATER, slow_down=True),
    4: _retry("app API call limit reached", _LATER, slow_down=True),
    613: _retry("API call rate or usage limit reached", _LATER, slow_down=True),
    # Server errors: perhaps not sent, perhaps sent (an overloaded edge answering for a
    # backend that took it), so the retry waits for a status webhook first.
    131000: _server("generic platform error"),
    1: _server("unknown platform error (API unknown)"),
    2: _server("platform service temporarily unavailable"),
    131016: _server("platform service overloaded or unavailable"),
    133004: _server("platform server temporarily unavailable"),
    # The recipient cannot get it: final for this contact, the campaign goes on.
    131026: _failed("message undeliverable: not on WhatsApp, old app or terms not accepted"),
    1013: _failed("recipient is not a valid WhatsApp user (on-premises API)"),
    131049: _failed("not delivered to keep the ecosystem healthy (marketing cap per user)"),
    131050: _failed("recipient stopped marketing messages", opted_out=True),
    130472: _failed("recipient's number is part of a marketing message experiment"),
    130497: _failed("the business may not message users in the recipient's country"),
    131021: _failed("recipient is the sender's own number"),
    131030: _failed("recipient is not in the test number's allowed list"),
    # The parameters of this send: Error; dispatch pauses when every send fails this way.
    132000: _param("template parameter count does not match the template"),
    132008: _param("template parameter value invalid"),
    132012: _param("template parameter format does not match the template"),
    132018: _param(
        "template parameter refused: new-line/tab characters or more than 4 consecutive spaces"
    ),
    131008: _param("required parameter missing"),
    131009: _param("parameter value invalid"),
    100: _param("invalid parameter"),
    135000: _param("generic user error in the request parameters"),
    # Wrong for this message or contact: Error, the campaign goes on.
    131047: _error("more than 24 h since the user's last reply: a template is required"),
    470: _error("outside the 24 h customer service window (on-premises API)"),
    131051: _error("unsupported message type"),
    131052: _error("media download error"),
    131053: _error("media upload error"),
    # The template cannot be sent: pause.
    132001: _pause("template does not exist in this language", _F.TEMPLATE),
    132005: _pause("template text too long after parameters", _F.TEMPLATE),
    132007: _pause("template format breaks a policy", _F.TEMPLATE),
    132015: _pause("template is paused (low quality)", _F.TEMPLATE),
    132016: _pause("template is disabled", _F.TEMPLATE),
    132068: _pause("the template's flow is blocked", _F.TEMPLATE),
    132069: _pause("the template's flow is throttled", _F.TEMPLATE),
    # Account, payment, permission, token and sender number: every send fails, pause at once.
    0: _pause("authentication failed (AuthException): token expired or invalidated"),
    3: _pause("capability or permission missing for this app (API method)"),
    10: _pause("permission denied for this app or number"),
    190: _pause("access token expired or invalid"),
    33: _pause("the business phone number has been deleted"),
    368: _pause("temporarily blocked for policy violations"),
    131005: _pause("access denied: permission not granted or removed"),
    131031: _pause("business account locked"),
    131037: _pause("the sender number's display name is not approved yet"),
    131042: _pause("payment problem of the business account (eligibility payment issue)"),
    131045: _pause("sender number registration error (incorrect certificate)"),
    131048: _pause("spam rate limit hit: sender quality issue"),
    131057: _pause("business account in maintenance mode"),
    133000: _pause("sender number deregistration incomplete"),
    133005: _pause("sender number two-step verification PIN mismatch"),
    133006: _pause("sender number needs re-verification"),
    133008: _pause("too many two-step verification PIN guesses for the sender number"),
    133009: _pause("two-step verification PIN guessed too fast for the sender number"),
    133010: _pause("sender phone number not registered"),
    133015: _pause("sender number was recently deleted: registration pending"),
    133016: _pause("sender number register/deregister rate limit exceeded"),
}
# 200-299: "API Permission", one meaning for the whole range.
PERMISSION_RANGE = range(200, 300)
_CODES.update(
    {
        code: _pause("permission missing for this operation (API permission)")
        for code in PERMISSION_RANGE
    }
)

ERROR_CLASSES: Mapping[int, ErrorClass] = MappingProxyType(_CODES)
"""Every documented code -> what it means for the contact and the campaign."""

# (code, subcode) pairs that mean more than their code alone. 100/33: "Object with ID ...
# does not exist, cannot be loaded due to missing permissions": the sender's phone number id
# is wrong, so every send fails the same way.
_BY_SUBCODE: Mapping[tuple[int, int | None], ErrorClass] = MappingProxyType(
    {(100, 33): _pause("sender phone number id unknown or not permitted (100/33)")}
)

# Responses without a parsable error code, decided on the HTTP status alone.
_STATUS_WITHOUT_CODE: Mapping[int, ErrorClass] = MappingProxyType(
    {
        # Token, permission or URL (phone number id / version) problems: every send fails.
        401: _pause("unauthorized: token missing, expired or invalid"),
        403: _pause("forbidden: token lacks permission for this number"),
        404: _pause("not found: wrong phone number id or API version"),
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
            family=cls.family,
        )
    if attempt_no >= max_attempts:
        # slow_down still holds: it is about the sender, not about this contact.
        return Decision(
            kind=OutcomeKind.ERROR,
            slow_down=cls.slow_down,
            reason=f"retries exhausted: {reason}"[:MAX_REASON_CHARS],
            family=cls.family,
        )
    pace = _PACES[cls.pace or RetryPace.BACKOFF]
    delay = pace.floor_s + backoff_seconds(attempt_no, base=pace.base_s, cap=pace.cap_s, rng=rng)
    return Decision(
        kind=OutcomeKind.RETRY,
        slow_down=cls.slow_down,
        retry_after_s=delay,
        reason=reason,
        family=cls.family,
    )


_CONNECT_CLASS = _retry(
    "connection failed before the request was sent", RetryPace.BACKOFF, family=_F.TRANSIENT
)
_SERVER_ERROR_CLASS = _server("platform server error")


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
        cls = _BY_SUBCODE.get((code, result.error_subcode)) or ERROR_CLASSES.get(code)
        if cls is not None:
            return _decide(cls, f"{code} {cls.meaning}", result, attempt_no, max_attempts, rng)
        if status is not None and status >= 500:
            head = f"HTTP {status} with unknown code {code}"
            return _decide(_SERVER_ERROR_CLASS, head, result, attempt_no, max_attempts, rng)
        return _unknown(f"unknown platform error {code}", result)

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
    return _unknown(f"HTTP {status} without an error code", result)


def _unknown(head: str, result: SendResult) -> Decision:
    """Error for the contact, flagged: dispatch pauses after a run of them."""
    return Decision(OutcomeKind.ERROR, reason=_reason(head, result), family=ErrorFamily.UNKNOWN)
