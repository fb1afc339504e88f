"""Deterministic outcome rules of the simulator: which recipient gets which answer.

Pure functions only (no I/O, no clock, no randomness), so tests can choose phone numbers that
hit each path. ``outcome_for(recipient_digits, rules, attempt_no)`` decides, in this order:

1. ``rules.explicit[digits]`` if present. A value is either an :class:`OutcomeKind` (handled
   exactly like the share-based kind below, including the attempt logic) or an ``int`` error
   code: the send is refused with that code on *every* attempt (HTTP status from
   :data:`ERROR_CATALOGUE`, 400 for codes not listed). Example: ``{"4915100000001": 131050}``.
2. Otherwise the **last two digits** of the number, ``n = int(digits[-2:])`` (0..99), fall into
   consecutive buckets whose widths are ``round(share * 100)``, in this fixed order::

       [0,            u)             UNDELIVERABLE    send refused: 131026, HTTP 400
       [u,            u+d)           DELIVERY_FAILED  accepted; later ``sent`` then ``failed``
                                                      webhooks with errors[0].code =
                                                      ``delivery_fail_code`` (default 131049)
       [u+d,          u+d+s)         SERVER_ERROR     HTTP 500, code ``server_error_code``
                                                      (131000) for the first
                                                      ``server_error_attempts`` (1) attempts of
                                                      that recipient, SUCCESS afterwards
       [u+d+s,        u+d+s+t)       TIMEOUT          accepted (counted, webhooks sent) but the
                                                      HTTP answer hangs ``timeout_hang_s`` for
                                                      the first ``timeout_attempts`` (1)
                                                      attempts; a later attempt is answered at
                                                      once (and is a second accepted send)
       [u+d+s+t,      u+d+s+t+a)     ACCEPTED_ERROR   accepted (counted, webhooks sent) but
                                                      answered HTTP 500 ``server_error_code``
                                                      for the first ``server_error_attempts``
                                                      attempts, as an overloaded edge answers for
                                                      a backend that took the message; a retry
                                                      is a second accepted send
       [u+d+s+t+a,    u+d+s+t+a+l)   UNDELIVERABLE_LATER  accepted; later one ``failed``
                                                      webhook (no ``sent``) with errors[0].code
                                                      = ``undeliverable_later_code`` (131026):
                                                      the platform found out after answering
       [u+d+s+t+a+l,  100)           SUCCESS

   with u = undeliverable_share, d = delivery_fail_share, s = server_error_share,
   t = timeout_share, a = accepted_error_share, l = undeliverable_later_share (each x100,
   rounded). All shares default to 0: everything succeeds.

   The :meth:`OutcomeRules.demo` preset (u=0.03, d=0.03, s=0.02, t=0.01) maps
   ``..00``-``..02`` undeliverable, ``..03``-``..05`` delivery failed, ``..06``-``..07``
   server error once, ``..08`` timeout once, ``..09``-``..99`` success.

``attempt_no`` is 1 for the first request for that recipient that reached the outcome
decision (i.e. passed auth, body validation and the rate limit), 2 for the next, ...

Whether a delivered message is also **read** is decided by ``reads(digits, rules)``: the two
digits *before* the last two, ``m = int(digits[-4:-2])``, read iff ``m < round(read_share*100)``
(default read_share 0.7: ``..0000``-``..6999`` are read, ``..7000``-``..9999`` are not).
A read message skips its ``delivered`` webhook (the platform's "delivered and read at once")
when ``skips_delivered(digits, rules)``: ``int(digits[-6:-4]) <
round(read_without_delivered_share*100)`` (default 0: never).

``rules.user_ids`` maps a recipient's digits to a business-scoped user id: its statuses and
contacts then carry ``recipient_user_id`` / ``user_id`` beside the phone.

``wa_id_for(digits, rules)`` gives the ``wa_id`` the platform answers with: the input digits,
unless ``rules.wa_id_overrides`` names the number, or ``mimic_wa_id_quirks`` is on (Mexico
``52`` + 10 digits -> ``521`` + 10 digits; Brazil ``55`` + area + ``9`` + 8 digits -> the 9
dropped).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "ERROR_CATALOGUE",
    "ErrorInfo",
    "Outcome",
    "OutcomeKind",
    "OutcomeRules",
    "bucket_of",
    "error_info",
    "outcome_for",
    "reads",
    "skips_delivered",
    "wa_id_for",
]


class OutcomeKind(enum.StrEnum):
    SUCCESS = "success"
    UNDELIVERABLE = "undeliverable"
    DELIVERY_FAILED = "delivery_failed"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    ACCEPTED_ERROR = "accepted_error"  # taken, but answered with a server error
    # Taken (200), then a "failed" webhook with undeliverable_later_code (131026).
    UNDELIVERABLE_LATER = "undeliverable_later"
    ERROR = "error"  # refused at send with an explicit code (explicit map only)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happens to one send. ``code`` is the send error code (UNDELIVERABLE,
    SERVER_ERROR, ACCEPTED_ERROR, ERROR) or the code of the later ``failed`` status
    (DELIVERY_FAILED)."""

    kind: OutcomeKind
    code: int | None = None

    @property
    def accepted(self) -> bool:
        """True when the platform takes the message (wamid issued, webhooks follow)."""
        return self.kind in _ACCEPTED


SUCCESS = Outcome(OutcomeKind.SUCCESS)
_ACCEPTED = frozenset(
    {
        OutcomeKind.SUCCESS,
        OutcomeKind.DELIVERY_FAILED,
        OutcomeKind.TIMEOUT,
        OutcomeKind.ACCEPTED_ERROR,
        OutcomeKind.UNDELIVERABLE_LATER,
    }
)


@dataclass(frozen=True, slots=True)
class OutcomeRules:
    undeliverable_share: float = 0.0
    delivery_fail_share: float = 0.0
    server_error_share: float = 0.0
    timeout_share: float = 0.0
    accepted_error_share: float = 0.0
    undeliverable_later_share: float = 0.0
    read_share: float = 0.7
    read_without_delivered_share: float = 0.0
    explicit: Mapping[str, OutcomeKind | int] = field(default_factory=dict)
    server_error_attempts: int = 1
    timeout_attempts: int = 1
    server_error_code: int = 131000
    undeliverable_code: int = 131026
    delivery_fail_code: int = 131049
    undeliverable_later_code: int = 131026
    wa_id_overrides: Mapping[str, str] = field(default_factory=dict)
    user_ids: Mapping[str, str] = field(default_factory=dict)  # digits -> business-scoped id
    mimic_wa_id_quirks: bool = False
    _table: tuple[OutcomeKind, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        shares = (
            self.undeliverable_share,
            self.delivery_fail_share,
            self.server_error_share,
            self.timeout_share,
            self.accepted_error_share,
            self.undeliverable_later_share,
        )
        extra = (self.read_share, self.read_without_delivered_share)
        if any(not 0.0 <= s <= 1.0 for s in (*shares, *extra)):
            raise ValueError("outcome shares must be within [0, 1]")
        if sum(_width(s) for s in shares) > 100:
            raise ValueError("outcome shares add up to more than 1")
        if self.server_error_attempts < 0 or self.timeout_attempts < 0:
            raise ValueError("attempt counts must be >= 0")
        table = [OutcomeKind.SUCCESS] * 100
        for first, last, kind in self.boundaries():
            table[first:last] = [kind] * (last - first)
        object.__setattr__(self, "_table", tuple(table))  # bucket -> kind, for the hot path

    @classmethod
    def demo(cls, **overrides: Any) -> OutcomeRules:
        """A few percent of every path (see the module docstring for the buckets)."""
        base = cls(
            undeliverable_share=0.03,
            delivery_fail_share=0.03,
            server_error_share=0.02,
            timeout_share=0.01,
            read_share=0.7,
            mimic_wa_id_quirks=True,
        )
        return replace(base, **overrides)

    def boundaries(self) -> list[tuple[int, int, OutcomeKind]]:
        """The share buckets as ``(first, last_exclusive, kind)`` over 0..99."""
        out: list[tuple[int, int, OutcomeKind]] = []
        start = 0
        for share, kind in (
            (self.undeliverable_share, OutcomeKind.UNDELIVERABLE),
            (self.delivery_fail_share, OutcomeKind.DELIVERY_FAILED),
            (self.server_error_share, OutcomeKind.SERVER_ERROR),
            (self.timeout_share, OutcomeKind.TIMEOUT),
            (self.accepted_error_share, OutcomeKind.ACCEPTED_ERROR),
            (self.undeliverable_later_share, OutcomeKind.UNDELIVERABLE_LATER),
        ):
            width = _width(share)
            if width:
                out.append((start, start + width, kind))
            start += width
        if start < 100:
            out.append((start, 100, OutcomeKind.SUCCESS))
        return out


def _width(share: float) -> int:
    return round(share * 100)


def bucket_of(digits: str) -> int:
    """The last two digits as 0..99 (a one-digit number is its own bucket; none -> 0)."""
    tail = digits[-2:]
    return int(tail) if tail.isdigit() else 0


def _share_kind(digits: str, rules: OutcomeRules) -> OutcomeKind:
    return rules._table[bucket_of(digits)]


def _resolve(kind: OutcomeKind, rules: OutcomeRules, attempt_no: int) -> Outcome:
    if kind is OutcomeKind.UNDELIVERABLE:
        return Outcome(kind, rules.undeliverable_code)
    if kind is OutcomeKind.DELIVERY_FAILED:
        return Outcome(kind, rules.delivery_fail_code)
    if kind is OutcomeKind.UNDELIVERABLE_LATER:
        return Outcome(kind, rules.undeliverable_later_code)
    if kind in (OutcomeKind.SERVER_ERROR, OutcomeKind.ACCEPTED_ERROR):
        if attempt_no <= rules.server_error_attempts:
            return Outcome(kind, rules.server_error_code)
        return SUCCESS
    if kind is OutcomeKind.TIMEOUT:
        return Outcome(kind) if attempt_no <= rules.timeout_attempts else SUCCESS
    return SUCCESS


def outcome_for(recipient_digits: str, rules: OutcomeRules, attempt_no: int = 1) -> Outcome:
    """The outcome of the ``attempt_no``-th send to ``recipient_digits`` (see module doc)."""
    explicit = rules.explicit.get(recipient_digits)
    if explicit is not None:
        if isinstance(explicit, OutcomeKind):
            if explicit is OutcomeKind.ERROR:
                raise ValueError("OutcomeKind.ERROR needs a code: map the number to an int")
            return _resolve(explicit, rules, attempt_no)
        return Outcome(OutcomeKind.ERROR, int(explicit))
    return _resolve(_share_kind(recipient_digits, rules), rules, attempt_no)


def reads(recipient_digits: str, rules: OutcomeRules) -> bool:
    """True when a delivered message to this number is also read (digits [-4:-2])."""
    pair = recipient_digits[-4:-2]
    m = int(pair) if pair.isdigit() else 0
    return m < _width(rules.read_share)


def skips_delivered(recipient_digits: str, rules: OutcomeRules) -> bool:
    """True when a read message to this number gets no ``delivered`` webhook (digits [-6:-4])."""
    pair = recipient_digits[-6:-4]
    m = int(pair) if pair.isdigit() else 0
    return m < _width(rules.read_without_delivered_share)


def wa_id_for(recipient_digits: str, rules: OutcomeRules) -> str:
    """The WhatsApp id the platform reports for the input number."""
    override = rules.wa_id_overrides.get(recipient_digits)
    if override is not None:
        return override
    if rules.mimic_wa_id_quirks:
        d = recipient_digits
        if d.startswith("52") and len(d) == 12:  # Mexico: legacy mobile "1" after 52
            return "521" + d[2:]
        if d.startswith("55") and len(d) == 13 and d[4] == "9":  # Brazil: 9th digit dropped
            return d[:4] + d[5:]
    return recipient_digits


# --------------------------------------------------------------------------- error catalogue


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    http_status: int
    title: str
    details: str
    type: str = "OAuthException"
    subcode: int | None = None


PARAM_TEXT_DETAILS = (
    "Param text cannot have new-line/tab characters or more than 4 consecutive spaces"
)

ERROR_CATALOGUE: Mapping[int, ErrorInfo] = {
    1: ErrorInfo(400, "API Unknown", "Invalid request or possible server error."),
    2: ErrorInfo(503, "API Service", "Temporary due to downtime or due to being overloaded."),
    0: ErrorInfo(401, "AuthException", "We were unable to authenticate the app user."),
    3: ErrorInfo(403, "API Method", "Capability or permissions issue."),
    4: ErrorInfo(429, "API Too Many Calls", "The app has reached its API call rate limit."),
    10: ErrorInfo(403, "Permission Denied", "Permission is either not granted or removed."),
    100: ErrorInfo(
        400,
        "Invalid parameter",
        "The request included invalid or unsupported parameters.",
        subcode=None,
    ),
    190: ErrorInfo(
        401,
        "Invalid OAuth access token - Cannot parse access token",
        "Your access token has expired or is invalid.",
        subcode=463,
    ),
    200: ErrorInfo(403, "API Permission", "Permission is either not granted or removed."),
    368: ErrorInfo(
        403,
        "Temporarily blocked for policies violations",
        "The WhatsApp Business Account is restricted for policy violations.",
    ),
    613: ErrorInfo(
        429, "Calls to this api have exceeded the rate limit", "Too many calls in a short period."
    ),
    80007: ErrorInfo(
        429, "Rate limit issues", "The WhatsApp Business Account has reached its rate limit."
    ),
    130429: ErrorInfo(429, "Rate limit hit", "Cloud API message throughput has been reached."),
    131000: ErrorInfo(
        500, "Something went wrong", "Message failed to send because of an unknown error."
    ),
    131008: ErrorInfo(
        400, "Required parameter is missing", "The request is missing a required parameter."
    ),
    131009: ErrorInfo(
        400, "Parameter value is not valid", "One or more parameter values are invalid."
    ),
    131016: ErrorInfo(503, "Service unavailable", "A service is temporarily unavailable."),
    131026: ErrorInfo(
        400,
        "Message undeliverable",
        "Unable to deliver message: the recipient is not on WhatsApp or cannot receive it.",
        subcode=2494010,
    ),
    131005: ErrorInfo(
        403, "Access denied", "Permission is either not granted or has been removed."
    ),
    131021: ErrorInfo(
        400, "Recipient cannot be sender", "Sender and recipient phone number is the same."
    ),
    131030: ErrorInfo(
        400,
        "Recipient phone number not in allowed list",
        "Add the recipient phone number to the allowed list of the test number.",
    ),
    131031: ErrorInfo(403, "Business Account locked", "The Business Account has been locked."),
    131037: ErrorInfo(
        400,
        "WhatsApp provided number needs display name approval before message can be sent.",
        "The display name of the sender number is not approved.",
    ),
    131042: ErrorInfo(
        400,
        "Business eligibility payment issue",
        "Message failed to send because there were one or more errors related to your payment "
        "method.",
    ),
    130472: ErrorInfo(
        400,
        "User's number is part of an experiment",
        "Message was not sent as part of an experiment.",
    ),
    130497: ErrorInfo(
        400,
        "Business account is restricted from messaging users in this country",
        "The business cannot message users in the recipient's country.",
    ),
    131047: ErrorInfo(
        400,
        "Re-engagement message",
        "More than 24 hours have passed since the recipient last replied.",
    ),
    131048: ErrorInfo(
        400,
        "Spam rate limit hit",
        "Message failed to send because there are "
        "restrictions on how many messages can be sent from this number.",
    ),
    131049: ErrorInfo(
        400,
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "The message was not delivered (per-user marketing limit).",
    ),
    131050: ErrorInfo(
        400,
        "Unable to deliver the message. This recipient has chosen to stop "
        "receiving marketing messages on WhatsApp from your business.",
        "The user stopped marketing messages.",
    ),
    131056: ErrorInfo(
        429,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Too many messages sent from this phone number to the same recipient "
        "in a short period of time.",
    ),
    132000: ErrorInfo(
        400,
        "Number of parameters does not match the expected number of params",
        "The number of variable parameter values does not match the template.",
    ),
    132001: ErrorInfo(
        400,
        "Template name does not exist in the translation",
        "The template does not exist in the specified language or is not approved.",
    ),
    132005: ErrorInfo(400, "Translated text too long", "Translated text is too long."),
    132007: ErrorInfo(
        400,
        "Template Format Character Policy Violated",
        "Template content violates a WhatsApp policy.",
    ),
    132015: ErrorInfo(400, "Template is Paused", "The template is paused due to low quality."),
    132016: ErrorInfo(400, "Template is Disabled", "The template has been disabled."),
    132012: ErrorInfo(
        400,
        "Parameter format does not match format in the created template",
        "Variable parameter values formatted incorrectly.",
    ),
    132018: ErrorInfo(
        400,
        "There's an issue with the parameters in your template",
        PARAM_TEXT_DETAILS,
    ),
    133010: ErrorInfo(
        400,
        "Phone number Not Registered",
        "The phone number is not registered on the WhatsApp Business Platform.",
    ),
}


def error_info(code: int) -> ErrorInfo:
    """Catalogue entry for ``code``; unknown codes are HTTP 400 with a generic text."""
    info = ERROR_CATALOGUE.get(code)
    if info is None:
        return ErrorInfo(400, f"Error {code}", f"Simulated error {code}.")
    return info
