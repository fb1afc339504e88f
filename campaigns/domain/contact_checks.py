"""The contacts check's rules (pure), seeds 002 and 004.

``POST /contacts/check`` takes numbers in any format and answers, in input order, ``valid``
(with a ``wa_id``), ``invalid``, ``processing`` or ``failed`` per item. An item that is no
phone number is ``failed`` on its own. A provider's answer (``valid`` / ``invalid``) is kept
in the registry for ``CONTACT_CHECK_TTL_H`` hours and answered from there unless
``force_check``. Without a provider the registry answers from what sends proved.

What is trusted: a provider's ``valid`` proves little (the repurposed endpoint answers it for
every number, seed 004), so it never makes a person sendable or lifts anything; an
``invalid`` only ends the contacts of a ``--check-contacts`` campaign (``not_on_whatsapp``)
and never sets UNAVAILABLE, which only a real send result does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from campaigns.domain.phones import PhoneOk, normalize_phone
from campaigns.domain.registry import Person, PersonStatus


class CheckStatus(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    PROCESSING = "processing"
    FAILED = "failed"


CACHEABLE = frozenset({CheckStatus.VALID, CheckStatus.INVALID})
"""Provider answers kept in the registry (a failure or a pending check is asked again)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: CheckStatus
    wa_id: str | None = None
    message: str | None = None
    cached: bool = False  # answered from the registry, no provider call


@dataclass(frozen=True, slots=True)
class Parsed:
    """One input item: its E.164 reading, or why it has none."""

    e164: str | None
    problem: str | None = None


def parse_input(item: Any) -> Parsed:
    """Any standard format; without + or 00 the digits are read as an international number
    (the seeds' client reads them with its own country code, which we do not have)."""
    if isinstance(item, bool) or not isinstance(item, str | int):
        return Parsed(None, "not a phone number (give a string)")
    result = normalize_phone(str(item), "ZZ")
    if isinstance(result, PhoneOk):
        return Parsed(result.e164)
    return Parsed(None, result.detail)


def cached_answer(person: Person | None, *, now: datetime, ttl: timedelta) -> Answer | None:
    """The registry's answer to a provider check asked within the TTL, if any."""
    if person is None or person.checked_at is None or person.check_status is None:
        return None
    if now - person.checked_at > ttl:
        return None
    status = CheckStatus(person.check_status)
    if status not in CACHEABLE:
        return None
    wa_id = person.wa_id if status is CheckStatus.VALID else None
    return Answer(status, wa_id, cached=True)


def registry_answer(e164: str, person: Person | None, *, delivered: bool, ttl_h: float) -> Answer:
    """Without a provider (Cloud API only): what the registry knows from real sends."""
    if person is not None and person.status is PersonStatus.UNAVAILABLE:
        return Answer(
            CheckStatus.INVALID,
            message=f"a send to it was refused with {person.unavailable_code}",
            cached=True,
        )
    if delivered:
        wa_id = (person.wa_id if person is not None else None) or e164[1:]
        return Answer(CheckStatus.VALID, wa_id, cached=True)
    return Answer(
        CheckStatus.FAILED,
        message=f"no message to this number was delivered in the last {ttl_h:g} h, and no "
        "contacts endpoint is configured (WHATSAPP_CONTACTS_URL) to ask",
        cached=True,
    )


def provider_answer(raw: Mapping[str, Any] | None) -> Answer:
    """One item of the provider's answer; a missing or unreadable one is a failure."""
    if raw is None:
        return Answer(CheckStatus.FAILED, message="the provider did not answer for it")
    try:
        status = CheckStatus(str(raw.get("status")))
    except ValueError:
        return Answer(CheckStatus.FAILED, message=f"unknown status {raw.get('status')!r}")
    wa_id = raw.get("wa_id")
    wa_id = str(wa_id) if wa_id and status is CheckStatus.VALID else None
    message = "the provider could not check it" if status is CheckStatus.FAILED else None
    return Answer(status, wa_id, message)


def in_order(parsed: Sequence[Parsed], answers: Mapping[str, Answer]) -> list[tuple[int, Answer]]:
    """Each input's answer by its index: its number's, or failed with why it has none."""
    out: list[tuple[int, Answer]] = []
    for index, item in enumerate(parsed):
        if item.e164 is None:
            out.append((index, Answer(CheckStatus.FAILED, message=item.problem)))
        else:
            out.append((index, answers[item.e164]))
    return out
