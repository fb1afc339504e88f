"""The contact registry's use cases for operators (API, CLI): look a person up, block and
unblock, record an opt-in or an opt-out, remove the record, and the same in bulk.

``{phone}`` is an E.164 number with or without its +, or a wa_id
(:func:`campaigns.domain.registry.phone_key`); anything else is refused (422). Every change
goes through :func:`campaigns.storage.registry.apply`, the rules of
:func:`campaigns.domain.registry.learn`.

After ``DELETE`` a person is gone (404), UNAVAILABLE and BLOCKED with it, unless an opt-out
stood: the opt-out outlives the removal, so ``GET`` still shows the record with only the
opt-out (and ``removed_at``), and only the person's own opt-in (``opt-in``) clears it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, RowMapping

from campaigns.domain.refusals import NotFound
from campaigns.domain.registry import (
    CREATING,
    SOURCE_OPERATOR,
    Change,
    InvalidPhone,
    Learned,
    PhoneKey,
    phone_key,
)
from campaigns.storage import campaigns as campaigns_db
from campaigns.storage import profiles as profiles_db
from campaigns.storage import registry as registry_db
from campaigns.storage import sql
from schemas.registry import (
    BulkItem,
    BulkOperation,
    BulkReport,
    BulkResult,
    PersonCampaign,
    PersonOut,
    RemovedOut,
    SuppressedOut,
)

_BULK_CHANGES = {
    BulkOperation.BLOCK: Change.BLOCKED,
    BulkOperation.UNBLOCK: Change.UNBLOCKED,
    BulkOperation.OPT_IN: Change.OPTED_IN,
    BulkOperation.OPT_OUT: Change.OPTED_OUT,
    BulkOperation.REMOVE: Change.REMOVED,
}


class PersonNotFound(NotFound):
    def __init__(self, value: str) -> None:
        super().__init__("contact", value)


def get_person(engine: Engine, phone: str) -> PersonOut:
    key = phone_key(phone)
    with engine.connect() as conn:
        row = _visible(conn, key)
        if row is None:
            raise PersonNotFound(phone)
        return _person_out(conn, row)


def block(engine: Engine, phone: str, reason: str | None) -> PersonOut:
    return _change(engine, phone, Change.BLOCKED, reason)


def unblock(engine: Engine, phone: str) -> PersonOut:
    return _change(engine, phone, Change.UNBLOCKED, None)


def opt_in(engine: Engine, phone: str, source: str | None) -> PersonOut:
    return _change(engine, phone, Change.OPTED_IN, source)


def opt_out(engine: Engine, phone: str, source: str | None) -> PersonOut:
    return _change(engine, phone, Change.OPTED_OUT, source)


def remove(engine: Engine, phone: str) -> RemovedOut:
    key = phone_key(phone)
    with engine.begin() as conn:
        target = _target(conn, key, Change.REMOVED)
        if target is None:
            raise PersonNotFound(phone)
        registry_db.apply(conn, [(target, Learned(Change.REMOVED, sql.now(conn)))])
        profiles_db.forget(conn, [target])  # the profile goes with the record
        row = registry_db.find_person(conn, [target], None)
    assert row is not None
    return RemovedOut(phone_e164=target, opted_out=bool(row["opted_out"]))


def _change(engine: Engine, phone: str, change: Change, reason: str | None) -> PersonOut:
    key = phone_key(phone)
    with engine.begin() as conn:
        target = _target(conn, key, change)
        if target is None:
            if change in CREATING:  # a wa_id that is no valid number, and nobody has it
                raise InvalidPhone(phone)
            raise PersonNotFound(phone)
        registry_db.apply(conn, [(target, _learned(change, sql.now(conn), reason))])
        row = registry_db.find_person(conn, [target], None)
        assert row is not None
        return _person_out(conn, row)


def _visible(conn: Connection, key: PhoneKey) -> RowMapping | None:
    row = registry_db.find_person(conn, key.candidates, key.digits)
    if row is None or row["phone_e164"] is None:
        return None
    if row["removed_at"] is not None and not row["opted_out"]:
        return None
    return row


def _target(conn: Connection, key: PhoneKey, change: Change) -> str | None:
    """The E.164 number a change of this key applies to: a known person's (a removed one
    too, for a change that brings it back), else the key's own reading for a change that
    makes a record; None when there is nobody to change."""
    if change in CREATING:
        row = registry_db.find_person(conn, key.candidates, key.digits)
        if row is not None and row["phone_e164"] is not None:
            return str(row["phone_e164"])
        return key.e164
    row = _visible(conn, key)
    return str(row["phone_e164"]) if row is not None else None


def _person_out(conn: Connection, row: RowMapping) -> PersonOut:
    person = registry_db.person_of(row)
    campaigns = [PersonCampaign(**dict(r)) for r in registry_db.campaigns_of(conn, int(row["id"]))]
    return PersonOut(
        phone_e164=person.phone_e164,
        wa_id=person.wa_id,
        status=person.status.value if person.status else None,
        unavailable_since=person.unavailable_since,
        unavailable_code=person.unavailable_code,
        blocked_at=person.blocked_at,
        blocked_reason=person.blocked_reason,
        opted_in=person.opted_in,
        opted_in_at=person.opted_in_at,
        opt_in_source=person.opt_in_source,
        opted_out=person.opted_out,
        opted_out_at=person.opted_out_at,
        opt_out_source=person.opt_out_source,
        check_status=person.check_status,
        checked_at=person.checked_at,
        first_seen_at=person.first_seen_at,
        last_sent_at=person.last_sent_at,
        removed_at=person.removed_at,
        campaigns=campaigns,
    )


# --------------------------------------------------------------------------- bulk


@dataclass
class _Item:
    input: str
    key: PhoneKey | None
    problem: str | None = None
    target: str | None = None


def bulk(
    engine: Engine, operation: BulkOperation, contacts: Sequence[str], reason: str | None
) -> BulkReport:
    """One operation on up to 10,000 people, a result per item (seed 003's report): one bad
    item never fails the call. Applied in one transaction (a statement per round of
    repeated numbers)."""
    change = _BULK_CHANGES[operation]
    items = [_parse(value) for value in contacts]
    keys = [item.key for item in items if item.key is not None]
    with engine.begin() as conn:
        at = sql.now(conn)
        known = registry_db.find_people(
            conn,
            [n for key in keys for n in key.candidates],
            [key.digits for key in keys],
        )
        for item in items:
            if item.key is not None:
                item.target = _resolve(item.key, change, known)
        facts = [(i.target, _learned(change, at, reason)) for i in items if i.target]
        found = registry_db.apply(conn, facts).found if facts else set()
        if change is Change.REMOVED:
            profiles_db.forget(conn, found)
    return BulkReport(results=[_result(item, change, found) for item in items])


def _resolve(key: PhoneKey, change: Change, known: registry_db.Known) -> str | None:
    """``_target`` over the people read for the whole bulk call."""
    row = next(
        (known.by_phone[n] for n in key.candidates if n in known.by_phone),
        known.by_wa_id.get(key.digits),
    )
    if change in CREATING:
        return str(row["phone_e164"]) if row is not None else key.e164
    if row is None or (row["removed_at"] is not None and not row["opted_out"]):
        return None
    return str(row["phone_e164"])


def _parse(value: str) -> _Item:
    try:
        return _Item(value, phone_key(value))
    except InvalidPhone as exc:
        return _Item(value, None, exc.message)


def _learned(change: Change, at: datetime, reason: str | None) -> Learned:
    if change is Change.BLOCKED:
        return Learned(change, at, reason=reason)
    if change in (Change.OPTED_IN, Change.OPTED_OUT):
        return Learned(change, at, source=reason or SOURCE_OPERATOR)
    return Learned(change, at)


def _result(item: _Item, change: Change, found: set[str]) -> BulkItem:
    if item.key is None:
        return BulkItem(
            input=item.input, phone_e164=None, result=BulkResult.FAILURE, message=item.problem
        )
    if item.target is None:
        if change in CREATING:
            message = "not a valid phone number, and no record has it as its wa_id"
            return BulkItem(
                input=item.input, phone_e164=None, result=BulkResult.FAILURE, message=message
            )
        return BulkItem(
            input=item.input,
            phone_e164=item.key.e164,
            result=BulkResult.NOT_FOUND,
            message="no record of this person",
        )
    if item.target not in found:  # changed by another transaction meanwhile: say so
        return BulkItem(
            input=item.input,
            phone_e164=item.target,
            result=BulkResult.NOT_FOUND,
            message="the record went away meanwhile",
        )
    return BulkItem(input=item.input, phone_e164=item.target, result=BulkResult.SUCCESS)


def suppressed(engine: Engine, campaign_id: int) -> SuppressedOut:
    """A campaign's contacts refused by the registry, counted by reason (dashboard)."""
    with engine.connect() as conn:
        if campaigns_db.get_campaign(conn, campaign_id) is None:
            raise NotFound("campaign", campaign_id)
        counts = registry_db.suppressed_counts(conn, campaign_id)
    return SuppressedOut(campaign_id=campaign_id, reasons=counts, total=sum(counts.values()))
