"""What webhooks prove about people: who opted out, who resumed, which user id is which phone.

Read from each applied body (:class:`PeopleFacts`), written with the body's statuses in the
applier's transaction (:func:`apply_people`), through :mod:`campaigns.storage.opt_outs`:

- a STOP reply (source ``whatsapp reply``) and 131050 in a ``failed`` status (source
  ``platform 131050``, as the synchronous answer) opt the sender / recipient out;
- a ``user_preferences`` item of category ``marketing_messages``: ``stop`` opts out with source
  ``user_preferences``, ``resume`` lifts only an opt-out of that source;
- a payload showing a phone and a business-scoped user id together keeps the pair in
  ``user_ids``; an opt-out known only by a user id is kept against it (``user:<id>``) and
  written for the phone as soon as the pair is known.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Connection

from campaigns.domain.webhooks import opt_out_numbers
from campaigns.storage import opt_outs as opt_outs_db
from schemas.whatsapp import WebhookUpdates

SOURCE_REPLY = "whatsapp reply"
SOURCE_OPTED_OUT_CODE = "platform 131050"
SOURCE_PREFERENCES = "user_preferences"
OPTED_OUT_CODE = 131050
MARKETING = "marketing_messages"
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
        for _, message in parsed.inbound_messages():
            self.pair(message.from_, message.from_user_id)
        for _, status in parsed.statuses():
            if status.recipient_user_id:
                self.pair(status.recipient_id, status.recipient_user_id)
            if status.errors and any(e.code == OPTED_OUT_CODE for e in status.errors):
                self.stop(SOURCE_OPTED_OUT_CODE, status.recipient_id, status.recipient_user_id)
        for _, pref in parsed.user_preferences():
            self.pair(pref.wa_id, pref.user_id)
            value = (pref.value or "").strip().lower()
            if (pref.category or "").strip().lower() == MARKETING and value in _PREFERENCE_VALUES:
                self.preferences.append((value, pref.wa_id, pref.user_id))
                if value == "stop" and not pref.wa_id and pref.user_id:
                    self.user_only.add(pref.user_id)


@dataclass
class PeopleStats:
    opted_out: int = 0  # opt-out rows written (phones and user-id keys)
    resumed: int = 0  # user_preferences opt-outs lifted
    mapped: int = 0  # user id -> phone pairs new or changed


def _keys(wa_id: str | None, user_id: str | None) -> set[str]:
    if wa_id:
        return set(opt_out_numbers(wa_id))
    return {opt_outs_db.user_key(user_id)} if user_id else set()


def apply_people(conn: Connection, facts: PeopleFacts) -> PeopleStats:
    """Writes the batch's facts; preferences in their order, so a stop then a resume ends
    resumed. Runs in the applier's transaction."""
    stats = PeopleStats()
    changed = opt_outs_db.record_user_ids(conn, facts.phones_by_user)
    stats.mapped = len(changed)
    for value, wa_id, user_id in facts.preferences:
        if value == "stop":
            keys = _keys(wa_id, user_id)
            stats.opted_out += opt_outs_db.insert_opt_outs(conn, keys, source=SOURCE_PREFERENCES)
        else:
            stats.resumed += _resume(conn, wa_id, user_id)
    for source, who in facts.stops.items():
        keys = {key for wa_id, user_id in who for key in _keys(wa_id, user_id)}
        stats.opted_out += opt_outs_db.insert_opt_outs(conn, keys, source=source)
    stats.opted_out += _reach_phones(conn, {*changed, *facts.user_only})
    return stats


def _resume(conn: Connection, wa_id: str | None, user_id: str | None) -> int:
    """Lifts the person's ``user_preferences`` opt-outs, by phone and by user id; any other
    source (a STOP reply, 131050, an operator) stays."""
    phones = set(opt_out_numbers(wa_id)) if wa_id else set()
    users = {user_id} if user_id else set()
    if user_id:
        mapped = opt_outs_db.phones_of_users(conn, [user_id]).get(user_id)
        if mapped:
            phones |= opt_out_numbers(mapped)
    users |= set(opt_outs_db.users_of_phones(conn, phones))
    keys = phones | {opt_outs_db.user_key(u) for u in users}
    return opt_outs_db.remove_opt_outs(conn, keys, source=SOURCE_PREFERENCES)


def _reach_phones(conn: Connection, user_ids: set[str]) -> int:
    """Writes each opt-out kept against one of these user ids for its phone, once known."""
    kept = opt_outs_db.user_opt_outs(conn, user_ids)
    if not kept:
        return 0
    phones = opt_outs_db.phones_of_users(conn, {u for u, _ in kept})
    by_source: dict[str, set[str]] = defaultdict(set)
    for user_id, source in kept:
        phone = phones.get(user_id)
        if phone:
            by_source[source] |= opt_out_numbers(phone)
    return sum(
        opt_outs_db.insert_opt_outs(conn, numbers, source=source)
        for source, numbers in sorted(by_source.items())
    )
