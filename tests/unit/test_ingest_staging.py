"""Chunk staging: records to COPY text rows, duplicates inside a chunk, settling what the
database knows (prior contacts, opt-outs, lines already stored)."""

from __future__ import annotations

import json

import pytest

from campaigns.domain.csv_intake import RecordBatch
from campaigns.domain.registry import PersonStatus, Standing
from campaigns.domain.uploads import COPY_COLUMNS, ChunkResult, ChunkSpec, StagedChunk, stage_chunk

DE_A = "+4915123456701"
DE_B = "+4915123456702"
SPEC = ChunkSpec(
    campaign_id=3,
    upload_id=9,
    region="DE",
    variable_names=("first_name", "code"),
    required=("first_name",),
)


def batch(*rows: tuple[int, str, str, str]) -> RecordBatch:
    lines = [r[0] for r in rows]
    return RecordBatch(
        lines, tuple(r[1] for r in rows), (tuple(r[2] for r in rows), tuple(r[3] for r in rows))
    )


def unescape(value: str) -> str | None:
    """Reads one COPY text field back (the inverse of the staging escapes)."""
    if value == "\\N":
        return None
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            nxt = value[i + 1]
            out.append({"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_copy(text: str) -> list[dict[str, object]]:
    assert text.endswith("\n")
    rows = []
    for line in text[:-1].split("\n"):
        fields = [unescape(f) for f in line.split("\t")]
        assert len(fields) == len(COPY_COLUMNS)
        row: dict[str, object] = dict(zip(COPY_COLUMNS, fields, strict=True))
        row["variables"] = json.loads(str(row["variables"]))
        rows.append(row)
    return rows


def settle(
    chunk: StagedChunk,
    prior: dict[str, tuple[int, int]] | None = None,
    opted_out: set[str] | None = None,
    stored: set[int] | None = None,
    standings: dict[str, Standing] | None = None,
    require_opt_in: bool = False,
) -> tuple[ChunkResult, list[dict[str, object]]]:
    known = {phone: Standing(opted_out=True) for phone in opted_out or ()}
    known.update(standings or {})
    result = chunk.settle(
        SPEC.upload_id,
        prior=prior or {},
        standings=known,
        require_opt_in=require_opt_in,
        stored_lines=stored or set(),
    )
    return result, parse_copy(chunk.copy_text())


def test_valid_and_invalid_rows_become_copy_rows() -> None:
    chunk = stage_chunk(
        batch(
            (2, "0151 23456701", "Anna", "X1"),
            (3, "call me", "Ben", "X2"),
            (4, DE_B, " ", "X3"),
        ),
        SPEC,
    )
    result, rows = settle(chunk)
    assert result == ChunkResult(
        valid=1, invalid=2, reasons={"not_a_number": 1, "missing_variable": 1}
    )
    assert rows == [
        {
            "campaign_id": "3",
            "upload_id": "9",
            "line_no": "2",
            "phone_raw": "0151 23456701",
            "phone_e164": DE_A,
            "person_id": DE_A[1:],
            "variables": {"first_name": "Anna", "code": "X1"},
            "state": "initial",
            "reason_code": None,
            "reason": None,
        },
        {
            "campaign_id": "3",
            "upload_id": "9",
            "line_no": "3",
            "phone_raw": "call me",
            "phone_e164": None,
            "person_id": None,
            "variables": {"first_name": "Ben", "code": "X2"},
            "state": "invalid_record",
            "reason_code": "not_a_number",
            "reason": "not a phone number",
        },
        {
            "campaign_id": "3",
            "upload_id": "9",
            "line_no": "4",
            "phone_raw": DE_B,
            "phone_e164": None,
            "person_id": None,
            "variables": {"first_name": " ", "code": "X3"},
            "state": "invalid_record",
            "reason_code": "missing_variable",
            "reason": "missing template variable: first_name",
        },
    ]


def test_values_with_copy_and_json_specials_round_trip() -> None:
    nasty = ["tab\there", "back\\slash", "new\nline", 'quote "x"', "cr\rx", "\\N", "Zoë €", "\x01"]
    rows = [(n + 2, f" {DE_A}\t", value, f"c{n}") for n, value in enumerate(nasty)]
    chunk = stage_chunk(batch(*rows), SPEC)
    _, parsed = settle(chunk)
    assert [r["variables"] for r in parsed] == [
        {"first_name": value, "code": f"c{n}"} for n, value in enumerate(nasty)
    ]
    assert {r["phone_raw"] for r in parsed} == {f" {DE_A}\t"}


def test_later_rows_of_a_number_are_duplicates_of_the_first() -> None:
    chunk = stage_chunk(
        batch(
            (2, DE_A, "a", ""),
            (3, "bad", "b", ""),
            (4, "0151 23456701", "c", ""),
            (5, DE_B, "d", ""),
            (6, "+49 151 23456701", "e", ""),
        ),
        SPEC,
    )
    result, rows = settle(chunk)
    assert result.valid == 2
    assert result.reasons == {"duplicate": 2, "not_a_number": 1}
    assert [(r["line_no"], r["reason"]) for r in rows if r["reason_code"] == "duplicate"] == [
        ("4", "duplicate of line 2"),
        ("6", "duplicate of line 2"),
    ]
    assert {r["phone_e164"] for r in rows if r["reason_code"] == "duplicate"} == {DE_A}


def test_prior_contacts_win_and_every_repeat_points_at_them() -> None:
    chunk = stage_chunk(batch((2, DE_A, "a", ""), (3, DE_B, "b", ""), (4, DE_A, "c", "")), SPEC)
    result, rows = settle(chunk, prior={DE_A: (17, 4)})
    assert result == ChunkResult(valid=1, invalid=2, reasons={"duplicate": 2})
    assert [r["reason"] for r in rows] == [
        "duplicate of line 17 of upload 4",
        None,
        "duplicate of line 17 of upload 4",
    ]


def test_prior_contact_of_the_same_upload_names_only_the_line() -> None:
    chunk = stage_chunk(batch((12, DE_A, "a", "")), SPEC)
    _, rows = settle(chunk, prior={DE_A: (3, SPEC.upload_id)})
    assert rows[0]["reason"] == "duplicate of line 3"


def test_opted_out_numbers_are_refused_unless_already_duplicates() -> None:
    chunk = stage_chunk(batch((2, DE_A, "a", ""), (3, DE_B, "b", ""), (4, DE_B, "c", "")), SPEC)
    result, rows = settle(chunk, prior={DE_A: (9, 1)}, opted_out={DE_A, DE_B})
    assert result.reasons == {"duplicate": 2, "opted_out": 1}
    assert [(r["reason_code"], r["reason"]) for r in rows] == [
        ("duplicate", "duplicate of line 9 of upload 1"),
        ("opted_out", "opted out"),
        ("duplicate", "duplicate of line 3"),
    ]


def test_lines_already_stored_are_left_out() -> None:
    chunk = stage_chunk(batch((2, DE_A, "a", ""), (3, "bad", "b", ""), (4, DE_B, "c", "")), SPEC)
    result, rows = settle(chunk, stored={2, 3})
    assert result == ChunkResult(valid=1, invalid=0, reasons={})
    assert [r["line_no"] for r in rows] == ["4"]


def test_no_variable_columns() -> None:
    spec = ChunkSpec(campaign_id=1, upload_id=1, region="DE", variable_names=(), required=())
    chunk = stage_chunk(RecordBatch([2, 3], (DE_A, ""), ()), spec)
    _, rows = settle(chunk)
    assert [(r["variables"], r["reason_code"]) for r in rows] == [({}, None), ({}, "empty_phone")]


def test_odd_variable_names_round_trip() -> None:
    names = ('100% "off"', "back\\slash", "tab\tname", "plain")
    spec = ChunkSpec(campaign_id=1, upload_id=1, region="DE", variable_names=names, required=())
    values = (("a%sb",), ("x",), ('"q"',), ("Zoë",))
    chunk = stage_chunk(RecordBatch([2], (DE_A,), values), spec)
    _, rows = settle(chunk)
    assert rows[0]["variables"] == {
        '100% "off"': "a%sb",
        "back\\slash": "x",
        "tab\tname": '"q"',
        "plain": "Zoë",
    }


def test_a_number_that_lost_its_plus_is_stored_valid_and_marked_repaired() -> None:
    gb = ChunkSpec(campaign_id=3, upload_id=9, region="GB", variable_names=(), required=())
    records = RecordBatch([2, 3, 4], ("1-202-555-0104", "230 5 2512345", "07911 123456"), ())
    result, rows = settle(stage_chunk(records, gb))
    assert (result.valid, result.invalid) == (3, 0)
    assert [(r["phone_e164"], r["state"], r["reason_code"], r["reason"]) for r in rows] == [
        (
            "+12025550104",
            "initial",
            "repaired_international",
            "read as the international number +1 202-555-0104",
        ),
        (
            "+23052512345",
            "initial",
            "repaired_international",
            "read as the international number +230 5251 2345",
        ),
        ("+447911123456", "initial", None, None),
    ]


def test_a_template_variable_over_the_platform_limit_is_an_invalid_record() -> None:
    long_name = "A" * 1025
    spaced = "Anna" + " " * 2000 + "Maria"  # sent as "Anna Maria": within the limit
    long_code = "x" * 5000  # "code" fills no template variable here: never sent
    chunk = stage_chunk(
        batch(
            (2, DE_A, long_name, "X1"),
            (3, DE_B, spaced, long_code),
            (4, "+4915123456703", "A" * 1024, "X3"),
        ),
        SPEC,
    )
    result, rows = settle(chunk)
    assert (result.valid, result.invalid, result.reasons) == (2, 1, {"parameter_too_long": 1})
    first = rows[0]
    assert (first["state"], first["reason_code"], first["phone_e164"]) == (
        "invalid_record",
        "parameter_too_long",
        None,
    )
    assert first["reason"] == (
        "template variable 'first_name' has 1,025 characters; the platform accepts at most 1,024"
    )
    assert first["variables"] == {"first_name": long_name, "code": "X1"}  # kept as uploaded
    assert [r["state"] for r in rows[1:]] == ["initial", "initial"]
    assert rows[1]["variables"] == {"first_name": spaced, "code": long_code}


# --------------------------------------------------------------------------- row rules


def stage_one(
    phone: str, variables: dict[str, str], required: tuple[str, ...] = ("first_name", "code")
) -> dict[str, object]:
    """The COPY row ``stage_chunk`` makes of one record (line 7)."""
    names = ("first_name", "code", "note")
    spec = ChunkSpec(
        campaign_id=1, upload_id=1, region="DE", variable_names=names, required=required
    )
    values = tuple((variables.get(name, ""),) for name in names)
    _, rows = settle(stage_chunk(RecordBatch([7], (phone,), values), spec))
    (row,) = rows
    return row


def test_valid_row_is_normalised() -> None:
    row = stage_one("0151 23456789", {"first_name": "Anna", "code": "X1"}, ("first_name",))
    assert (row["line_no"], row["phone_raw"], row["phone_e164"]) == (
        "7",
        "0151 23456789",
        "+4915123456789",
    )
    assert (row["state"], row["reason_code"], row["reason"]) == ("initial", None, None)
    assert row["variables"] == {"first_name": "Anna", "code": "X1", "note": ""}


ANNA = {"first_name": "Anna", "code": "X"}
PHONE = "+4915123456789"


@pytest.mark.parametrize(
    ("phone", "variables", "reason", "code"),
    [
        ("", ANNA, "empty phone", "empty_phone"),
        ("  ", ANNA, "empty phone", "empty_phone"),
        ("call me", ANNA, "not a phone number", "not_a_number"),
        ("0151", ANNA, "not a valid number for region DE", "invalid_number"),
        ("+1 555 0100", ANNA, "not a valid number for region US", "invalid_number"),
        (
            PHONE,
            {"first_name": "", "code": "X"},
            "missing template variable: first_name",
            "missing_variable",
        ),
        (
            PHONE,
            {"first_name": " \t", "code": "X"},
            "missing template variable: first_name",
            "missing_variable",
        ),
        (PHONE, {"first_name": "Anna"}, "missing template variable: code", "missing_variable"),
        (PHONE, {}, "missing template variables: first_name, code", "missing_variable"),
    ],
)
def test_invalid_rows_say_why(
    phone: str, variables: dict[str, str], reason: str, code: str
) -> None:
    row = stage_one(phone, variables)
    assert (row["state"], row["reason_code"], row["reason"]) == ("invalid_record", code, reason)
    assert (row["phone_raw"], row["phone_e164"]) == (phone, None)


def test_phone_reason_comes_before_missing_variables() -> None:
    row = stage_one("abc", {}, ("first_name",))
    assert (row["reason_code"], row["reason"]) == ("not_a_number", "not a phone number")


def test_without_required_variables_empty_values_are_fine() -> None:
    row = stage_one(PHONE, {}, ())
    assert (row["phone_e164"], row["state"]) == (PHONE, "initial")


def test_every_row_with_a_number_carries_its_person_id() -> None:
    chunk = stage_chunk(
        batch((2, DE_A, "a", ""), (3, "bad", "b", ""), (4, DE_A, "c", ""), (5, DE_B, "", "")),
        SPEC,
    )
    _, rows = settle(chunk)
    # The id is the number's digits; a row without a number (or one refused before its
    # number counts, a missing variable) links to nobody.
    assert [r["person_id"] for r in rows] == [DE_A[1:], None, DE_A[1:], None]


@pytest.mark.parametrize(
    ("standing", "require", "code"),
    [
        (Standing(PersonStatus.UNAVAILABLE), False, "unavailable"),
        (Standing(PersonStatus.BLOCKED, opted_out=True), False, "blocked"),
        (Standing(opted_out=True, opted_in=True), True, "opted_out"),
        (Standing(), True, "not_opted_in"),
        (Standing(opted_in=True), True, None),
        (Standing(), False, None),
    ],
)
def test_the_registry_refuses_people_with_their_reason(
    standing: Standing, require: bool, code: str | None
) -> None:
    chunk = stage_chunk(batch((2, DE_A, "a", ""), (3, DE_B, "b", "")), SPEC)
    result, rows = settle(chunk, standings={DE_A: standing}, require_opt_in=require)
    assert rows[0]["reason_code"] == code
    assert rows[0]["state"] == ("initial" if code is None else "invalid_record")
    # A person the registry has no record of is refused only for a missing opt-in.
    assert rows[1]["reason_code"] == ("not_opted_in" if require else None)
    assert result.valid == 2 - (code is not None) - require


OPT_SPEC = ChunkSpec(
    campaign_id=3,
    upload_id=9,
    region="DE",
    variable_names=("first_name", "opted_in"),
    required=("first_name",),
    opt_in_index=1,
)


def test_the_opted_in_column_is_read_and_decides_a_required_opt_in() -> None:
    chunk = stage_chunk(
        batch(
            (2, DE_A, "a", "Yes"),
            (3, DE_B, "b", "0"),
            (4, "+4915123456703", "c", ""),
            (5, "+4915123456704", "d", "maybe"),
            (6, DE_A, "e", "no"),  # a duplicate's cell counts for nothing
        ),
        OPT_SPEC,
    )
    assert chunk.opt_ins == {DE_A: True, DE_B: False}
    result, rows = settle(
        chunk,
        standings={"+4915123456703": Standing(opted_in=True), DE_B: Standing(opted_in=True)},
        require_opt_in=True,
    )
    assert [r["reason_code"] for r in rows] == [
        None,
        "not_opted_in",  # this upload says no: it wins over the record's yes
        None,  # blank: the record's opt-in stands
        "invalid_opted_in",
        "duplicate",
    ]
    assert "opted_in must be true/false" in str(rows[3]["reason"])
    assert result.reasons == {"not_opted_in": 1, "invalid_opted_in": 1, "duplicate": 1}


def test_an_uploaded_opt_in_does_not_lift_an_opt_out() -> None:
    chunk = stage_chunk(batch((2, DE_A, "a", "true")), OPT_SPEC)
    _, rows = settle(chunk, opted_out={DE_A}, require_opt_in=True)
    assert rows[0]["reason_code"] == "opted_out"


# --------------------------------------------------------------------------- profiles


def test_profile_cells_are_checked_staged_and_written_once_per_person() -> None:
    from campaigns.domain.profile_docs import profile_columns
    from tests.unit.test_profile_docs import V2

    de_c = "+4915123456703"
    names = ("first_name", "age", "consent", "nickname")
    spec = ChunkSpec(
        campaign_id=3,
        upload_id=9,
        region="DE",
        variable_names=names,
        required=(),
        profile=profile_columns(V2, names, ["name"]),
    )
    records = RecordBatch(
        [2, 3, 4, 5],
        (DE_A, DE_B, DE_A, de_c),
        (
            ("Anna", "Ben", "Again", "Cleo"),
            ("31", "x", "32", ""),
            ("yes", "no", "no", ""),
            ("", "", "", ""),
        ),
    )
    chunk = stage_chunk(records, spec)
    # name is a template variable without a column: the stored profiles must have it
    assert chunk.needs == {DE_A: ("name",), de_c: ("name",)}
    result = chunk.settle(9, prior={}, standings={}, filled={DE_A: frozenset({"name"})})
    rows = parse_copy(chunk.copy_text())
    codes = [r["reason_code"] for r in rows]
    assert codes == [None, "profile_invalid", "duplicate", "missing_variable"]
    assert rows[1]["reason"] == "age: expected INTEGER, got 'x'"
    assert rows[0]["variables"] == {"first_name": "Anna", "age": "31", "nickname": ""}  # no consent
    assert result.reasons == {"profile_invalid": 1, "duplicate": 1, "missing_variable": 1}
    # One patch, the first record's; the refused, repeated and missing ones write nothing
    assert json.loads(chunk.profiles or "") == {DE_A[1:]: {"age": 31, "consent": True}}


def test_a_number_an_earlier_chunk_of_the_upload_had_writes_no_profile() -> None:
    from campaigns.domain.profile_docs import profile_columns
    from tests.unit.test_profile_docs import V2

    spec = ChunkSpec(3, 9, "DE", ("age",), (), profile=profile_columns(V2, ("age",), []))
    chunk = stage_chunk(RecordBatch([9], (DE_A,), (("5",),)), spec)
    chunk.settle(9, prior={DE_A: (2, 9)}, standings={})
    assert chunk.profiles is None
    chunk = stage_chunk(RecordBatch([9], (DE_A,), (("5",),)), spec)
    chunk.settle(9, prior={DE_A: (2, 8)}, standings={})  # another upload had it: written
    assert json.loads(chunk.profiles or "") == {DE_A[1:]: {"age": 5}}
