"""What webhooks prove about people: who is not on WhatsApp, who opted out, who resumed,
which user id is which phone.

Read from each applied body (:class:`PeopleFacts`), written with the body's statuses in the
applier's transaction (:func:`apply_people`), through the registry
(:mod:`campaigns.storage.registry`) under the rules of :mod:`campaigns.domain.registry`:

- 131026 or 1013 in a ``failed`` status makes the recipient UNAVAILABLE (with the code);
- a STOP reply (source ``whatsapp reply``) and 131050 in a ``failed`` status (source
  ``platform 131050``, as the synchronous answer) opt the sender / recipient out;
- a ``user_preferences`` item of category ``marketing_messages``: ``stop`` opts out with source
  ``user_preferences``, ``resume`` lifts only an opt-out of that source;
- a ``contacts[].profile.name`` is kept as the person's WhatsApp profile name (the
  profile's ``whatsapp_profile_name``; people the registry knows only);
- a payload showing a phone and a business-scoped user id together keeps the pair in
  ``user_ids``; an opt-out known only by a user id is kept against it (a person with that
  ``user_id`` and no phone) and written for the phone as soon as the pair is known.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from campaigns.domain.registry import (
    SOURCE_OPTED_OUT_CODE,
    SOURCE_PREFERENCES,
    SOURCE_REPLY,
    Change,
    Learned,
    rule_for_code,
)
from campaigns.domain.webhooks import opt_out_numbers
from campaigns.storage import profiles as profiles_db
from campaigns.storage import registry as registry_db
from campaigns.storage import sql
from schemas.whatsapp import WebhookUpdates

__all__ = [
    "SOURCE_OPTED_OUT_CODE",
    "SOURCE_PREFERENCES",
    "SOURCE_REPLY",
    "PeopleFacts",
    "PeopleStats",
    "apply_people",
]

MARKETING = "marketing_messages"
MAX_PROFILE_NAME = 256
_PREFERENCE_VALUES = frozenset({"stop", "resume"})


def _e164(wa_id: str | None) -> str | None:
    digits = "".join(ch for ch in wa_id if ch.isdigit()) if wa_id else ""
    return "+" + digits if digits else None


@dataclass
class PeopleFacts:
    """What one batch of webhook bodies says about people, in the order it says it."""

    phones_by_user: dict[str, str] = field(default_factory=dict)  # user id -> E.164
    stops: dict[str, list[tuple[str | None, str | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # source -> [(wa_id, user id)]
    preferences: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    user_only: set[str] = field(default_factory=set)  # user ids of opt-outs without a phone
    unavailable: dict[str, int] = field(default_factory=dict)  # E.164 -> code (131026, 1013)
    names: dict[str, str] = field(default_factory=dict)  # E.164 -> WhatsApp profile name

    def pair(self, wa_id: str | None, user_id: str | None) -> None:
        if wa_id and user_id:
            phone = _e164(wa_id)
            if phone is not None:
                self.phones_by_user[user_id] = phone

    def stop(self, source: str, wa_id: str | None, user_id: str | None) -> None:
        if not wa_id and user_id:
            self.user_only.add(user_id)
        if wa_id or user_id:
            self.stops[source].append((wa_id, user_id))

    def note(self, parsed: WebhookUpdates) -> None:
        """Everything of one parsed body but its inbound replies (see :meth:`reply`)."""
        for contact in parsed.contacts():
            self.pair(contact.wa_id, contact.user_id)
            name = contact.profile.name if contact.profile is not None else None
            phone = _e164(contact.wa_id)
            if name and name.strip() and phone is not None:
                self.names[phone] = name.strip()[:MAX_PROFILE_NAME]
        for _, message in parsed.inbound_messages():
            self.pair(message.from_, message.from_user_id)
        for _, status in parsed.statuses():
            if status.recipient_user_id:
                self.pair(status.recipient_id, status.recipient_user_id)
            for error in status.errors or ():
                rule = rule_for_code(error.code)
                if rule is None:
                    continue
                if rule.change is Change.OPTED_OUT and rule.source is not None:
                    self.stop(rule.source, status.recipient_id, status.recipient_user_id)
                elif rule.change is Change.UNAVAILABLE and error.code is not None:
                    phone = _e164(status.recipient_id)
                    if phone is not None:
                        self.unavailable.setdefault(phone, error.code)
        for _, pref in parsed.user_preferences():
            self.pair(pref.wa_id, pref.user_id)
            value = (pref.value or "").strip().lower()
            if (pref.category or "").strip().lower() == MARKETING and value in _PREFERENCE_VALUES:
                self.preferences.append((value, pref.wa_id, pref.user_id))
                if value == "stop" and not pref.wa_id and pref.user_id:
                    self.user_only.add(pref.user_id)


@dataclass
class PeopleStats:
    opted_out: int = 0  # opt-outs written (phones and user ids)
    resumed: int = 0  # user_preferences opt-outs lifted
    mapped: int = 0  # user id -> phone pairs new or changed
    unavailable: int = 0  # people made (or found) UNAVAILABLE
    names: int = 0  # WhatsApp profile names new or changed


def apply_people(conn: Connection, facts: PeopleFacts) -> PeopleStats:
    """Writes the batch's facts; preferences in their order, so a stop then a resume ends
    resumed. Runs in the applier's transaction."""
    stats = PeopleStats()
    stats.names = profiles_db.record_profile_names(conn, facts.names)
    changed = registry_db.record_user_ids(conn, facts.phones_by_user)
    stats.mapped = len(changed)
    if not (facts.preferences or facts.stops or facts.unavailable or changed or facts.user_only):
        return stats
    at = sql.now(conn)
    for value, wa_id, user_id in facts.preferences:
        if value == "stop":
            stats.opted_out += _opt_out(conn, SOURCE_PREFERENCES, [(wa_id, user_id)], at)
        else:
            stats.resumed += _resume(conn, wa_id, user_id, at)
    for source, who in facts.stops.items():
        stats.opted_out += _opt_out(conn, source, who, at)
    if facts.unavailable:
        learned = [
            (phone, Learned(Change.UNAVAILABLE, at, code=code))
            for phone, code in sorted(facts.unavailable.items())
        ]
        stats.unavailable += len(registry_db.apply(conn, learned).changed)
    stats.opted_out += _reach_phones(conn, {*changed, *facts.user_only})
    return stats


def _opt_out(
    conn: Connection, source: str, who: list[tuple[str | None, str | None]], at: datetime
) -> int:
    phones = {phone for wa_id, _ in who if wa_id for phone in opt_out_numbers(wa_id)}
    users = {user_id for wa_id, user_id in who if not wa_id and user_id}
    learned = [(p, Learned(Change.OPTED_OUT, at, source=source)) for p in sorted(phones)]
    done = len(registry_db.apply(conn, learned).changed) if learned else 0
    return done + registry_db.opt_out_users(conn, users, source=source, at=at)


def _resume(conn: Connection, wa_id: str | None, user_id: str | None, at: datetime) -> int:
    """Lifts the person's ``user_preferences`` opt-outs, by phone and by user id; any other
    source (a STOP reply, 131050, an operator) stays."""
    phones = set(opt_out_numbers(wa_id)) if wa_id else set()
    users = {user_id} if user_id else set()
    if user_id:
        mapped = registry_db.phones_of_users(conn, [user_id]).get(user_id)
        if mapped:
            phones |= opt_out_numbers(mapped)
    users |= set(registry_db.users_of_phones(conn, phones))
    before = registry_db.people_by_phone(conn, phones)
    learned = [(p, Learned(Change.RESUMED, at)) for p in sorted(phones)]
    registry_db.apply(conn, learned)
    lifted = sum(
        1 for p in before.values() if p.opted_out and p.opt_out_source == SOURCE_PREFERENCES
    )
    return lifted + registry_db.resume_users(conn, users)


def _reach_phones(conn: Connection, user_ids: set[str]) -> int:
    """Writes each opt-out kept against one of these user ids for its phone, once known."""
    kept = registry_db.user_opt_outs(conn, user_ids)
    if not kept:
        return 0
    phones = registry_db.phones_of_users(conn, {u for u, _, _ in kept})
    learned: list[tuple[str, Learned]] = []
    for user_id, source, at in sorted(kept):
        phone = phones.get(user_id)
        if phone:
            learned += [
                (p, Learned(Change.OPTED_OUT, at, source=source))
                for p in sorted(opt_out_numbers(phone))
            ]
    return len(registry_db.apply(conn, learned).changed) if learned else 0
