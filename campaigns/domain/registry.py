"""The contact registry's rules (pure): one record per person, what the platform and the
operators teach it, and whom it refuses.

A *person* is one record per E.164 number (seeds 000, 002-004), across every campaign;
a campaign contact is one row of one upload and links to its person. This module holds:

- :data:`LEARNING`: the one table of what each signal teaches the registry (a 131026 send
  answer, a STOP reply, an operator's block, ...) as a :class:`Change`;
- :func:`learn`: what a change does to a person's record (the SQL of
  :mod:`campaigns.storage.registry` writes the same, checked against this function);
- :data:`SUPPRESSION`: the ordered rules that refuse a person at upload and at send time,
  and :func:`suppression`, their verdict;
- the parsing of a ``{phone}`` path part, of the uploads' ``opted_in`` column and of the
  contacts check's inputs.

Trust: UNAVAILABLE comes only from a real send result (131026 or the on-premises 1013,
as the send's answer or a ``failed`` status webhook) and stays until the record is
removed (seed 000). A contacts check never sets it: the repurposed endpoint answers
``valid`` for every number (seed 004), so a check result is kept as ``check_status`` and
``wa_id`` only. An opt-out outlives the removal of the record; only the person's own
opt-in (recorded by an operator) clears it, and a ``user_preferences`` resume clears only
the opt-out a ``user_preferences`` stop set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from campaigns.domain.phones import PhoneOk, normalize_phone
from campaigns.domain.refusals import Refusal


class PersonStatus(StrEnum):
    """Seed 000's WhatsApp contact statuses: empty (None), UNAVAILABLE or BLOCKED."""

    UNAVAILABLE = "UNAVAILABLE"
    BLOCKED = "BLOCKED"


class Suppression(StrEnum):
    """Reason codes of a refused person (``contacts.reason_code``)."""

    BLOCKED = "blocked"
    UNAVAILABLE = "unavailable"
    OPTED_OUT = "opted_out"
    NOT_OPTED_IN = "not_opted_in"
    NOT_ON_WHATSAPP = "not_on_whatsapp"  # a --check-contacts campaign's check said invalid


SUPPRESSION_REASONS: Mapping[Suppression, str] = MappingProxyType(
    {
        Suppression.BLOCKED: "blocked by an operator",
        Suppression.UNAVAILABLE: "not on WhatsApp (a send was refused with 131026 or 1013)",
        Suppression.OPTED_OUT: "opted out",
        Suppression.NOT_OPTED_IN: "no opt-in recorded (the campaign requires one)",
        Suppression.NOT_ON_WHATSAPP: "the contacts check found no WhatsApp account",
    }
)
"""The operator text stored as ``contacts.reason`` with each code."""


class Change(StrEnum):
    """What the registry can learn about a person."""

    UNAVAILABLE = "unavailable"  # status UNAVAILABLE, with the code that proved it
    OPTED_OUT = "opted_out"  # opted out, with the source and the time
    RESUMED = "resumed"  # lifts an opt-out that user_preferences set (and no other)
    OPTED_IN = "opted_in"  # the person's own opt-in: lifts any opt-out
    UPLOAD_OPT_IN = "upload_opt_in"  # an upload's opted_in column (true or false)
    OPT_IN_WITHDRAWN = "opt_in_withdrawn"  # a profile write: no opt-in recorded (opt-out kept)
    BLOCKED = "blocked"
    UNBLOCKED = "unblocked"
    REMOVED = "removed"  # the record goes; its opt-out stays
    SENT = "sent"  # a message was accepted: last_sent_at, wa_id
    CHECKED = "checked"  # a contacts check answered: check_status, checked_at, wa_id
    SEEN = "seen"  # an upload has the number: the record exists (again) from now on


SOURCE_REPLY = "whatsapp reply"
SOURCE_OPTED_OUT_CODE = "platform 131050"
SOURCE_PREFERENCES = "user_preferences"
SOURCE_OPERATOR = "operator"
SOURCE_PROFILE = "profile"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the learning table: a signal and what it teaches."""

    signal: str
    change: Change
    source: str | None = None  # the opt-out / opt-in source it records
    code: int | None = None  # the platform error code that is the signal, if one is


LEARNING: tuple[Rule, ...] = (
    Rule(
        "131026 (not on WhatsApp): send answer or failed webhook", Change.UNAVAILABLE, code=131026
    ),
    Rule(
        "1013 (on-premises: user is not valid): send answer or failed webhook",
        Change.UNAVAILABLE,
        code=1013,
    ),
    Rule(
        "131050 (stopped marketing messages): send answer or failed webhook",
        Change.OPTED_OUT,
        SOURCE_OPTED_OUT_CODE,
        code=131050,
    ),
    Rule("reply that is an opt-out word (STOP, ...)", Change.OPTED_OUT, SOURCE_REPLY),
    Rule("user_preferences marketing_messages stop", Change.OPTED_OUT, SOURCE_PREFERENCES),
    Rule("user_preferences marketing_messages resume", Change.RESUMED, SOURCE_PREFERENCES),
    Rule("operator opt-out (API, CLI)", Change.OPTED_OUT, SOURCE_OPERATOR),
    Rule("operator records the person's opt-in (API, CLI)", Change.OPTED_IN, SOURCE_OPERATOR),
    Rule("upload with an opted_in column", Change.UPLOAD_OPT_IN, "upload"),
    Rule("profile write of opted_in true (API, CLI)", Change.OPTED_IN, SOURCE_PROFILE),
    Rule("profile write of opted_in false, a PUT or a reset", Change.OPT_IN_WITHDRAWN),
    Rule("operator block", Change.BLOCKED),
    Rule("operator unblock", Change.UNBLOCKED),
    Rule("operator remove (DELETE)", Change.REMOVED),
    Rule("send answer accepted", Change.SENT),
    Rule("contacts check answer", Change.CHECKED),
    Rule("a valid row of an upload", Change.SEEN),
)
"""What every signal teaches. :func:`rule_for_code` reads the platform's codes from it."""

_BY_CODE: Mapping[int, Rule] = MappingProxyType(
    {rule.code: rule for rule in LEARNING if rule.code is not None}
)


def rule_for_code(code: int | None) -> Rule | None:
    """The learning rule of a platform error code (send answer or failed webhook), if any."""
    return _BY_CODE.get(code) if code is not None else None


@dataclass(frozen=True, slots=True)
class Person:
    """A person's record, as stored (``people``) and shown (``GET /contacts/{phone}``)."""

    phone_e164: str | None
    wa_id: str | None = None
    user_id: str | None = None
    unavailable_since: datetime | None = None
    unavailable_code: int | None = None
    blocked_at: datetime | None = None
    blocked_reason: str | None = None
    opted_in: bool = False
    opted_in_at: datetime | None = None
    opt_in_source: str | None = None
    opted_out: bool = False
    opted_out_at: datetime | None = None
    opt_out_source: str | None = None
    check_status: str | None = None
    checked_at: datetime | None = None
    first_seen_at: datetime | None = None
    last_sent_at: datetime | None = None
    removed_at: datetime | None = None

    @property
    def status(self) -> PersonStatus | None:
        """BLOCKED while blocked, else UNAVAILABLE once a send proved it, else empty."""
        if self.blocked_at is not None:
            return PersonStatus.BLOCKED
        if self.unavailable_since is not None:
            return PersonStatus.UNAVAILABLE
        return None

    @property
    def visible(self) -> bool:
        """Whether ``GET /contacts/{phone}`` shows it: a removed record is gone (404) unless
        it still holds an opt-out, which outlives the removal and is shown."""
        return self.removed_at is None or self.opted_out


@dataclass(frozen=True, slots=True)
class Learned:
    """One change for one person, with what it carries."""

    change: Change
    at: datetime
    source: str | None = None  # OPTED_OUT, OPTED_IN, UPLOAD_OPT_IN
    code: int | None = None  # UNAVAILABLE
    reason: str | None = None  # BLOCKED
    value: bool | None = None  # UPLOAD_OPT_IN
    wa_id: str | None = None  # SENT, CHECKED
    check_status: str | None = None  # CHECKED


CREATING: frozenset[Change] = frozenset(
    {
        Change.UNAVAILABLE,
        Change.OPTED_OUT,
        Change.OPTED_IN,
        Change.UPLOAD_OPT_IN,
        Change.BLOCKED,
        Change.SENT,
        Change.CHECKED,
        Change.SEEN,
    }
)
"""Changes that create the record of an unknown person (and bring a removed one back);
the others (resume, unblock, remove) act only on a record that exists."""


def learn(person: Person | None, phone: str, fact: Learned) -> Person | None:
    """The record after ``fact``; None when there is (still) no record."""
    if person is None:
        if fact.change not in CREATING:
            return None
        person = Person(phone_e164=phone, first_seen_at=fact.at)
    elif fact.change in CREATING and person.removed_at is not None:
        person = replace(person, removed_at=None, first_seen_at=fact.at)
    return _CHANGES[fact.change](person, fact)


def _unavailable(p: Person, f: Learned) -> Person:
    if p.unavailable_since is not None:  # the first proof stays
        return p
    return replace(p, unavailable_since=f.at, unavailable_code=f.code)


def _opted_out(p: Person, f: Learned) -> Person:
    # The first opt-out stays, except that any other source replaces a user_preferences one:
    # a later resume must not lift what a STOP reply, 131050 or an operator said.
    if p.opted_out and not (
        p.opt_out_source == SOURCE_PREFERENCES and f.source != SOURCE_PREFERENCES
    ):
        return p
    return replace(p, opted_out=True, opted_out_at=f.at, opt_out_source=f.source)


def _resumed(p: Person, f: Learned) -> Person:
    if p.opted_out and p.opt_out_source == SOURCE_PREFERENCES:
        return replace(p, opted_out=False, opted_out_at=None, opt_out_source=None)
    return p


def _opted_in(p: Person, f: Learned) -> Person:
    return replace(
        p,
        opted_in=True,
        opted_in_at=f.at,
        opt_in_source=f.source,
        opted_out=False,
        opted_out_at=None,
        opt_out_source=None,
    )


def _upload_opt_in(p: Person, f: Learned) -> Person:
    if p.opted_out:  # a list is not the person's own opt-in: it cannot lift an opt-out
        return p
    return replace(p, opted_in=bool(f.value), opted_in_at=f.at, opt_in_source=f.source)


def _opt_in_withdrawn(p: Person, f: Learned) -> Person:
    return replace(p, opted_in=False, opted_in_at=None, opt_in_source=None)


def _blocked(p: Person, f: Learned) -> Person:
    return replace(p, blocked_at=p.blocked_at or f.at, blocked_reason=f.reason)


def _unblocked(p: Person, f: Learned) -> Person:
    return replace(p, blocked_at=None, blocked_reason=None)


def _removed(p: Person, f: Learned) -> Person:
    """Everything the record said goes, UNAVAILABLE and BLOCKED included; its opt-out stays
    (and when it was first seen: an upload or a send result brings it back as new)."""
    return Person(
        phone_e164=p.phone_e164,
        user_id=p.user_id,
        first_seen_at=p.first_seen_at,
        opted_out=p.opted_out,
        opted_out_at=p.opted_out_at,
        opt_out_source=p.opt_out_source,
        removed_at=p.removed_at or f.at,
    )


def _sent(p: Person, f: Learned) -> Person:
    last = f.at if p.last_sent_at is None else max(p.last_sent_at, f.at)
    return replace(p, last_sent_at=last, wa_id=f.wa_id or p.wa_id)


def _checked(p: Person, f: Learned) -> Person:
    return replace(p, check_status=f.check_status, checked_at=f.at, wa_id=f.wa_id or p.wa_id)


_CHANGES: Mapping[Change, Callable[[Person, Learned], Person]] = MappingProxyType(
    {
        Change.UNAVAILABLE: _unavailable,
        Change.OPTED_OUT: _opted_out,
        Change.RESUMED: _resumed,
        Change.OPTED_IN: _opted_in,
        Change.UPLOAD_OPT_IN: _upload_opt_in,
        Change.OPT_IN_WITHDRAWN: _opt_in_withdrawn,
        Change.BLOCKED: _blocked,
        Change.UNBLOCKED: _unblocked,
        Change.REMOVED: _removed,
        Change.SENT: _sent,
        Change.CHECKED: _checked,
        Change.SEEN: lambda p, _: p,
    }
)


# --------------------------------------------------------------------------- suppression


@dataclass(frozen=True, slots=True)
class Standing:
    """What decides whether a person may be messaged (a part of :class:`Person`)."""

    status: PersonStatus | None = None
    opted_out: bool = False
    opted_in: bool = False


SUPPRESSION: tuple[tuple[Suppression, Callable[[Standing, bool], bool]], ...] = (
    (Suppression.BLOCKED, lambda s, _: s.status is PersonStatus.BLOCKED),
    (Suppression.UNAVAILABLE, lambda s, _: s.status is PersonStatus.UNAVAILABLE),
    (Suppression.OPTED_OUT, lambda s, _: s.opted_out),
    (Suppression.NOT_OPTED_IN, lambda s, require_opt_in: require_opt_in and not s.opted_in),
)
"""Who is refused, in order (the first that holds names the reason), at upload and at send
time alike; the second argument is the campaign's ``require_opt_in``."""


def suppression(standing: Standing, *, require_opt_in: bool) -> Suppression | None:
    for reason, holds in SUPPRESSION:
        if holds(standing, require_opt_in):
            return reason
    return None


def standing_of(person: Person | None) -> Standing:
    if person is None:
        return Standing()
    return Standing(person.status, person.opted_out, person.opted_in)


# --------------------------------------------------------------------------- inputs


class InvalidPhone(Refusal):
    """A ``{phone}`` that is neither an E.164 number (with or without +) nor a wa_id."""

    def __init__(self, value: str) -> None:
        shown = value if len(value) <= 40 else value[:40] + "..."
        super().__init__(
            "invalid_phone",
            f"{shown!r} is not a phone number: give it in E.164 (+4915123456789, the + may be "
            "left out) or as a wa_id",
        )


@dataclass(frozen=True, slots=True)
class PhoneKey:
    """How a ``{phone}`` finds its person: the number as written (digits), and its E.164
    reading when it is a valid number (a new record is made under that one)."""

    digits: str
    e164: str | None

    @property
    def candidates(self) -> tuple[str, ...]:
        """E.164 forms to look up, the one as written first."""
        written = "+" + self.digits
        if self.e164 is None or self.e164 == written:
            return (written,)
        return (written, self.e164)


_PHONE_FORMATTING = re.compile(r"[\s().\-/]")


def phone_key(value: str) -> PhoneKey:
    """Reads a ``{phone}`` path part (or a bulk item): ``+4915...``, ``4915...`` or a wa_id.

    Raises :class:`InvalidPhone` (422) for anything else."""
    text = _PHONE_FORMATTING.sub("", value.strip())
    digits = text[1:] if text.startswith("+") else text
    if not digits.isascii() or not digits.isdigit() or not 6 <= len(digits) <= 15:
        raise InvalidPhone(value)
    if digits.startswith("0"):
        raise InvalidPhone(value)
    parsed = normalize_phone("+" + digits, "ZZ")
    return PhoneKey(digits, parsed.e164 if isinstance(parsed, PhoneOk) else None)


_E164 = re.compile(r"\+[1-9][0-9]{5,14}")


def is_e164(value: str) -> bool:
    """A number the registry can key: + and 6 to 15 digits (a webhook's wa_id may be junk)."""
    return _E164.fullmatch(value) is not None


def person_id(e164: str) -> int:
    """A person's id: its E.164 number's digits (at most 15, so it fits a bigint). The same
    number always has the same id, so the upload's parse processes write the link into the
    COPY rows themselves (no round trip per row)."""
    return int(e164[1:])


_TRUE = frozenset({"true", "yes", "1", "y", "t"})
_FALSE = frozenset({"false", "no", "0", "n", "f"})
OPT_IN_COLUMNS = frozenset({"optedin", "optin"})
INVALID_OPT_IN = "invalid_opted_in"


def is_opt_in_column(name: str) -> bool:
    """An upload column that records opt-ins: ``opted_in`` (case, spaces, ``_ - .`` ignored)."""
    return re.sub(r"[\s_\-.]", "", name).casefold() in OPT_IN_COLUMNS


def opt_in_value(raw: str) -> bool | None:
    """true/false/yes/no/1/0 (case ignored); None for a blank cell. Raises ValueError for
    anything else."""
    value = raw.strip().casefold()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(raw)


OPT_IN_REASON = "opted_in must be true/false, yes/no or 1/0"
