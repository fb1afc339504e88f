"""The contact registry's rules, pure: what each signal teaches (one table), what each change
does to a record, whom the registry refuses, and how operators name a person."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from campaigns.domain.refusals import RefusalKind
from campaigns.domain.registry import (
    LEARNING,
    SOURCE_OPTED_OUT_CODE,
    SOURCE_PREFERENCES,
    SOURCE_REPLY,
    Change,
    InvalidPhone,
    Learned,
    Person,
    PersonStatus,
    Standing,
    Suppression,
    is_e164,
    is_opt_in_column,
    learn,
    opt_in_value,
    person_id,
    phone_key,
    rule_for_code,
    standing_of,
    suppression,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
PHONE = "+4915123456701"


def at(change: Change, when: datetime = T1, **fields: object) -> Learned:
    return Learned(change, when, **fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the signal table


@pytest.mark.parametrize(
    ("code", "change", "source"),
    [
        (131026, Change.UNAVAILABLE, None),
        (1013, Change.UNAVAILABLE, None),
        (131050, Change.OPTED_OUT, SOURCE_OPTED_OUT_CODE),
        (131049, None, None),  # a marketing cap says nothing about the person
        (131000, None, None),
        (None, None, None),
    ],
)
def test_platform_codes_teach_what_the_table_says(
    code: int | None, change: Change | None, source: str | None
) -> None:
    rule = rule_for_code(code)
    assert (rule.change if rule else None) == change
    assert (rule.source if rule else None) == source


def test_every_change_has_a_rule_and_every_rule_a_change() -> None:
    assert {rule.change for rule in LEARNING} == set(Change)
    for change in Change:  # every change can be applied to a fresh record
        assert learn(Person(PHONE), PHONE, at(change, source="s", value=True)) is not None


# --------------------------------------------------------------------------- what changes do

KNOWN = Person(PHONE, first_seen_at=T0)
OUT_REPLY = replace(KNOWN, opted_out=True, opted_out_at=T0, opt_out_source=SOURCE_REPLY)
OUT_PREFS = replace(KNOWN, opted_out=True, opted_out_at=T0, opt_out_source=SOURCE_PREFERENCES)
UNAVAILABLE = replace(KNOWN, unavailable_since=T0, unavailable_code=131026)
BLOCKED = replace(KNOWN, blocked_at=T0, blocked_reason="fraud")
REMOVED = Person(PHONE, first_seen_at=T0, removed_at=T0)
REMOVED_OUT = replace(OUT_REPLY, removed_at=T0)

CASES: list[tuple[str, Person | None, Learned, Person | None]] = [
    (
        "131026 makes an unknown person UNAVAILABLE",
        None,
        at(Change.UNAVAILABLE, code=131026),
        Person(PHONE, first_seen_at=T1, unavailable_since=T1, unavailable_code=131026),
    ),
    ("the first proof stays", UNAVAILABLE, at(Change.UNAVAILABLE, code=1013), UNAVAILABLE),
    (
        "a STOP reply opts out with its source and time",
        KNOWN,
        at(Change.OPTED_OUT, source=SOURCE_REPLY),
        replace(KNOWN, opted_out=True, opted_out_at=T1, opt_out_source=SOURCE_REPLY),
    ),
    (
        "the first opt-out stays",
        OUT_REPLY,
        at(Change.OPTED_OUT, source=SOURCE_OPTED_OUT_CODE),
        OUT_REPLY,
    ),
    (
        "a STOP after a user_preferences stop takes over (a resume must not lift it)",
        OUT_PREFS,
        at(Change.OPTED_OUT, source=SOURCE_REPLY),
        replace(OUT_PREFS, opted_out_at=T1, opt_out_source=SOURCE_REPLY),
    ),
    (
        "resume lifts a user_preferences opt-out",
        OUT_PREFS,
        at(Change.RESUMED),
        KNOWN,
    ),
    ("resume never lifts a STOP reply", OUT_REPLY, at(Change.RESUMED), OUT_REPLY),
    ("resume of an unknown person makes no record", None, at(Change.RESUMED), None),
    (
        "the person's own opt-in lifts any opt-out",
        OUT_REPLY,
        at(Change.OPTED_IN, source="web form"),
        replace(KNOWN, opted_in=True, opted_in_at=T1, opt_in_source="web form"),
    ),
    (
        "an upload's opt-in is recorded with its source",
        KNOWN,
        at(Change.UPLOAD_OPT_IN, source="upload 4", value=True),
        replace(KNOWN, opted_in=True, opted_in_at=T1, opt_in_source="upload 4"),
    ),
    (
        "an upload's no withdraws an opt-in",
        replace(KNOWN, opted_in=True, opted_in_at=T0, opt_in_source="web"),
        at(Change.UPLOAD_OPT_IN, source="upload 5", value=False),
        replace(KNOWN, opted_in=False, opted_in_at=T1, opt_in_source="upload 5"),
    ),
    (
        "a profile's withdrawal clears the opt-in and its time, and keeps an opt-out",
        replace(OUT_REPLY, opted_in=True, opted_in_at=T0, opt_in_source="web"),
        at(Change.OPT_IN_WITHDRAWN),
        OUT_REPLY,
    ),
    ("a withdrawal makes no record of an unknown person", None, at(Change.OPT_IN_WITHDRAWN), None),
    (
        "an upload's opt-in cannot lift an opt-out",
        OUT_REPLY,
        at(Change.UPLOAD_OPT_IN, source="upload 4", value=True),
        OUT_REPLY,
    ),
    (
        "block keeps the first time, takes the new reason",
        BLOCKED,
        at(Change.BLOCKED, reason="spam"),
        replace(BLOCKED, blocked_reason="spam"),
    ),
    ("unblock", BLOCKED, at(Change.UNBLOCKED), KNOWN),
    (
        "remove erases UNAVAILABLE and BLOCKED",
        replace(UNAVAILABLE, blocked_at=T0, wa_id="4915", last_sent_at=T0),
        at(Change.REMOVED),
        Person(PHONE, first_seen_at=T0, removed_at=T1),
    ),
    (
        "remove keeps the opt-out",
        OUT_REPLY,
        at(Change.REMOVED),
        replace(REMOVED_OUT, removed_at=T1),
    ),
    (
        "a send result brings a removed record back",
        REMOVED,
        at(Change.UNAVAILABLE, code=131026),
        Person(PHONE, first_seen_at=T1, unavailable_since=T1, unavailable_code=131026),
    ),
    (
        "an upload brings a removed record back",
        REMOVED,
        at(Change.SEEN),
        Person(PHONE, first_seen_at=T1),
    ),
    ("unblock finds nothing to do on a removed record", REMOVED, at(Change.UNBLOCKED), REMOVED),
    (
        "a send keeps its time and wa_id",
        replace(KNOWN, last_sent_at=T1 + timedelta(minutes=5), wa_id="old"),
        at(Change.SENT, wa_id=None),
        replace(KNOWN, last_sent_at=T1 + timedelta(minutes=5), wa_id="old"),
    ),
    (
        "a check keeps its answer",
        KNOWN,
        at(Change.CHECKED, check_status="valid", wa_id="4915123456701"),
        replace(KNOWN, check_status="valid", checked_at=T1, wa_id="4915123456701"),
    ),
]


@pytest.mark.parametrize(("name", "before", "fact", "after"), CASES, ids=[c[0] for c in CASES])
def test_learning(name: str, before: Person | None, fact: Learned, after: Person | None) -> None:
    assert learn(before, PHONE, fact) == after


def test_status_follows_the_fields() -> None:
    assert KNOWN.status is None
    assert UNAVAILABLE.status is PersonStatus.UNAVAILABLE
    assert replace(UNAVAILABLE, blocked_at=T0).status is PersonStatus.BLOCKED
    assert learn(replace(UNAVAILABLE, blocked_at=T0), PHONE, at(Change.UNBLOCKED)) == UNAVAILABLE


def test_a_removed_record_is_visible_only_with_its_opt_out() -> None:
    assert KNOWN.visible and not REMOVED.visible and REMOVED_OUT.visible


# --------------------------------------------------------------------------- suppression

SUPPRESSION_TABLE = [
    (Standing(), False, None),
    (Standing(), True, Suppression.NOT_OPTED_IN),
    (Standing(opted_in=True), True, None),
    (Standing(PersonStatus.UNAVAILABLE), False, Suppression.UNAVAILABLE),
    (Standing(PersonStatus.BLOCKED), False, Suppression.BLOCKED),
    (Standing(opted_out=True, opted_in=True), True, Suppression.OPTED_OUT),
    (Standing(PersonStatus.BLOCKED, opted_out=True), True, Suppression.BLOCKED),
    (Standing(PersonStatus.UNAVAILABLE, opted_out=True), False, Suppression.UNAVAILABLE),
]


@pytest.mark.parametrize(("standing", "require", "reason"), SUPPRESSION_TABLE)
def test_suppression(standing: Standing, require: bool, reason: Suppression | None) -> None:
    assert suppression(standing, require_opt_in=require) == reason


def test_standing_of_a_record() -> None:
    assert standing_of(None) == Standing()
    assert standing_of(OUT_REPLY) == Standing(None, True, False)
    assert standing_of(replace(BLOCKED, opted_in=True)) == Standing(
        PersonStatus.BLOCKED, False, True
    )


# --------------------------------------------------------------------------- naming a person


@pytest.mark.parametrize(
    ("value", "digits", "candidates"),
    [
        ("+4915123456701", "4915123456701", ("+4915123456701",)),
        ("4915123456701", "4915123456701", ("+4915123456701",)),
        (" +49 151 2345-6701 ", "4915123456701", ("+4915123456701",)),
        # A Mexican wa_id: as written, then its E.164 reading.
        ("5215512345678", "5215512345678", ("+5215512345678", "+525512345678")),
    ],
)
def test_phone_keys(value: str, digits: str, candidates: tuple[str, ...]) -> None:
    key = phone_key(value)
    assert (key.digits, key.candidates) == (digits, candidates)


@pytest.mark.parametrize("value", ["", "abc", "+49abc", "12345", "0049151234567", "+" + "1" * 16])
def test_malformed_phones_are_refused(value: str) -> None:
    with pytest.raises(InvalidPhone) as refused:
        phone_key(value)
    assert refused.value.kind is RefusalKind.INVALID and refused.value.code == "invalid_phone"


@pytest.mark.parametrize(
    ("value", "ok"),
    [("+4915123456701", True), ("+" + "9" * 15, True), ("+" + "9" * 16, False), ("+0491", False)],
)
def test_only_e164_numbers_are_keys(value: str, ok: bool) -> None:
    assert is_e164(value) is ok


def test_a_person_id_is_the_numbers_digits() -> None:
    assert person_id("+4915123456701") == 4915123456701
    assert person_id("+" + "9" * 15) < 2**63


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("YES", True), ("1", True), ("no", False), ("False", False), ("0", False)],
)
def test_opt_in_cells(raw: str, value: bool) -> None:
    assert opt_in_value(raw) is value


def test_blank_and_bad_opt_in_cells() -> None:
    assert opt_in_value("  ") is None
    with pytest.raises(ValueError):
        opt_in_value("maybe")


@pytest.mark.parametrize(
    ("name", "is_it"),
    [("opted_in", True), ("Opted In", True), ("opt-in", True), ("optional", False)],
)
def test_opt_in_columns(name: str, is_it: bool) -> None:
    assert is_opt_in_column(name) is is_it
