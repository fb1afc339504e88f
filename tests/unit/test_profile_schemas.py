"""Profile schema rules (seed 004), rule by rule, and the typed values of each field type."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from campaigns.domain.languages import iso_639_3
from campaigns.domain.profiles import (
    RESERVED,
    FieldType,
    InvalidProfile,
    InvalidSchema,
    check_value,
    coerce_text,
    json_body,
    parse_field,
    parse_schema,
    schema_of,
)

SEED_004: dict[str, Any] = {
    "version": "0.0.1-alpha",
    "fields": [
        {
            "name": "consent",
            "display": "Consent Given",
            "type": "BOOLEAN",
            "default": False,
            "is_private": True,
        },
        {
            "name": "gender",
            "display": "Gender",
            "type": "ENUM",
            "null": False,
            "is_private": False,
            "default": "UNDISCLOSED",
            "enum": [
                {"value": "MALE", "display": "Male"},
                {"value": "FEMALE", "display": "Female"},
                {"value": "OTHER", "display": "Other"},
                {"value": "UNDISCLOSED", "display": "Undisclosed"},
            ],
        },
    ],
}


def field(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "age",
        "display": "Age",
        "type": "INTEGER",
        "default": 0,
        "is_private": False,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not ...}


def refused(body: Any) -> str:
    with pytest.raises(InvalidSchema) as caught:
        parse_schema(body)
    assert caught.value.code == "invalid_schema"
    return caught.value.message


def test_seed_004_example_is_a_valid_schema() -> None:
    version, fields = parse_schema(copy.deepcopy(SEED_004))
    assert version == "0.0.1-alpha"
    consent, gender = fields
    assert (consent.name, consent.type, consent.default, consent.nullable) == (
        "consent",
        FieldType.BOOLEAN,
        False,
        False,
    )
    assert consent.is_private
    assert gender.type is FieldType.ENUM
    assert gender.values == {"MALE", "FEMALE", "OTHER", "UNDISCLOSED"}
    assert gender.default == "UNDISCLOSED"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "JSON object"),
        ({"fields": []}, "version"),
        ({"version": "", "fields": []}, "version"),
        ({"version": "1"}, "fields: required"),
        ({"version": "1", "fields": {}}, "fields: required"),
        ({"version": "1", "fields": [], "extra": 1}, "unknown key(s) extra"),
        ({"version": "1", "fields": ["age"]}, "fields[0]: a field is an object"),
    ],
)
def test_the_body_must_have_the_right_shape(body: Any, says: str) -> None:
    assert says in refused(body)


@pytest.mark.parametrize("name", ["Age", "1age", "_age", "age-x", "âge", "", "a" * 65, 5, None])
def test_a_name_is_lower_case_starts_with_a_letter_and_holds_only_a_z_0_9_underscore(
    name: Any,
) -> None:
    message = refused({"version": "1", "fields": [field(name=name)]})
    assert "fields[0]" in message
    assert "must be lower case, start with a letter" in message


@pytest.mark.parametrize("name", ["a", "age_2", "x9_y"])
def test_good_names(name: str) -> None:
    assert parse_schema({"version": "1", "fields": [field(name=name)]})[1][0].name == name


@pytest.mark.parametrize("reserved", [f.name for f in RESERVED])
def test_a_name_never_clashes_with_a_reserved_field(reserved: str) -> None:
    message = refused({"version": "1", "fields": [field(name=reserved)]})
    assert f"fields[0] ({reserved}): name is a reserved field" in message


def test_names_are_unique() -> None:
    message = refused({"version": "1", "fields": [field(), field(display="Other")]})
    assert "fields[1] (age): name is not unique (fields[0] has it too)" in message


@pytest.mark.parametrize("missing", ["display", "type", "default", "is_private"])
def test_every_field_has_display_type_default_and_is_private(missing: str) -> None:
    message = refused({"version": "1", "fields": [field(**{missing: ...})]})
    assert f"fields[0] (age): {missing} required" in message


def test_display_is_a_non_empty_string_and_is_private_a_boolean() -> None:
    assert "display must be a non-empty string" in refused(
        {"version": "1", "fields": [field(display=" ")]}
    )
    assert "is_private must be true or false" in refused(
        {"version": "1", "fields": [field(is_private="yes")]}
    )


def test_unknown_type_and_unknown_keys_are_refused() -> None:
    assert "type 'NUMBER' is not one of DATETIME, BOOLEAN" in refused(
        {"version": "1", "fields": [field(type="NUMBER")]}
    )
    assert "unknown key(s) nul" in refused({"version": "1", "fields": [field(nul=True)]})


def test_a_boolean_needs_a_true_false_default_and_is_never_null() -> None:
    boolean = {"type": "BOOLEAN", "default": False}
    assert "a BOOLEAN field can never be null" in refused(
        {"version": "1", "fields": [field(**boolean, null=True)]}
    )
    assert "a BOOLEAN field needs a default of true or false" in refused(
        {"version": "1", "fields": [field(type="BOOLEAN", default=None)]}
    )
    assert "default: age: expected BOOLEAN, got 'no'" in refused(
        {"version": "1", "fields": [field(type="BOOLEAN", default="no")]}
    )


def test_a_null_default_needs_null_true() -> None:
    assert 'default is null, which only a field with "null": true may have' in refused(
        {"version": "1", "fields": [field(default=None)]}
    )
    (age,) = parse_schema({"version": "1", "fields": [field(default=None, null=True)]})[1]
    assert age.nullable
    assert age.default is None
    assert '"null" must be true or false' in refused(
        {"version": "1", "fields": [field(null="true")]}
    )


def enum_field(**over: Any) -> dict[str, Any]:
    options = [{"value": "MALE", "display": "Male"}, {"value": "FEMALE", "display": "Female"}]
    return field(**{"name": "gender", "type": "ENUM", "default": "MALE", "enum": options, **over})


@pytest.mark.parametrize("value", ["male", "1MALE", "_MALE", "MA-LE", "MÄLE", "", 3])
def test_enum_values_are_upper_case_start_with_a_letter_and_hold_only_a_z_0_9_underscore(
    value: Any,
) -> None:
    options = [{"value": value, "display": "x"}]
    message = refused({"version": "1", "fields": [enum_field(enum=options)]})
    assert "enum[0] value" in message
    assert "must be upper case, start with a letter" in message


def test_enum_rules() -> None:
    assert "an ENUM field needs enum" in refused({"version": "1", "fields": [enum_field(enum=...)]})
    assert "an ENUM field needs enum" in refused({"version": "1", "fields": [enum_field(enum=[])]})
    assert "enum[0] must be an object with value and display" in refused(
        {"version": "1", "fields": [enum_field(enum=["MALE"])]}
    )
    twice = [{"value": "A", "display": "a"}, {"value": "A", "display": "b"}]
    assert "enum value A appears twice" in refused(
        {"version": "1", "fields": [enum_field(enum=twice, default="A")]}
    )
    assert "expected ENUM (one of MALE, FEMALE), got 'OTHER'" in refused(
        {"version": "1", "fields": [enum_field(default="OTHER")]}
    )
    assert "enum is only for an ENUM field" in refused(
        {"version": "1", "fields": [field(enum=[{"value": "A", "display": "a"}])]}
    )


@pytest.mark.parametrize(
    ("kind", "default", "ok"),
    [
        ("STRING", "x", True),
        ("STRING", 1, False),
        ("INTEGER", 2, True),
        ("INTEGER", 2.5, False),
        ("INTEGER", True, False),
        ("FLOAT", 2, True),
        ("FLOAT", "2", False),
        ("DATETIME", "2026-12-01T09:00:00Z", True),
        ("DATETIME", "2026-12-01T09:00:00+02:00", False),
        ("DATETIME", "yesterday", False),
        ("LOCATION", {"latitude": 52.5, "longitude": 13.4}, True),
        ("LOCATION", {"latitude": 91, "longitude": 0}, False),
        ("LOCATION", {"latitude": 0, "longitude": 181}, False),
        ("LOCATION", [52.5, 13.4], False),
    ],
)
def test_defaults_have_the_field_type(kind: str, default: Any, ok: bool) -> None:
    body = {"version": "1", "fields": [field(type=kind, default=default)]}
    if ok:
        assert parse_schema(body)[1][0].default is not None
    else:
        assert f"fields[0] (age): default: age: expected {kind}" in refused(body)


def test_a_stored_schema_reads_back_the_same() -> None:
    schema = schema_of("u", "0.0.1-alpha", SEED_004["fields"])
    assert schema.get("gender") is not None
    assert schema.get("name") is RESERVED[0]
    assert schema.get("nope") is None
    assert [f.name for f in schema.all_fields][-2:] == ["consent", "gender"]


# --------------------------------------------------------------------------- values

AGE = parse_field(field(), "f")
SCORE = parse_field(field(name="score", type="FLOAT", default=2.0), "f")
WHEN = parse_field(field(name="when", type="DATETIME", default=None, null=True), "f")
WHERE = parse_field(field(name="where", type="LOCATION", default=None, null=True), "f")
FLAG = parse_field(field(name="flag", type="BOOLEAN", default=False), "f")
GENDER = parse_field(enum_field(), "f")
SECRET = parse_field(field(name="secret", is_private=True), "f")
LANGUAGE = next(f for f in RESERVED if f.name == "language")


@pytest.mark.parametrize(
    ("f", "value", "canonical"),
    [
        (AGE, 3, 3),
        (SCORE, 2, 2.0),
        (SCORE, -1.5, -1.5),
        (FLAG, True, True),
        (GENDER, "FEMALE", "FEMALE"),
        (WHEN, "2026-12-01T09:00:00Z", "2026-12-01T09:00:00Z"),
        (WHEN, "2026-12-01T09:00:00+00:00", "2026-12-01T09:00:00Z"),
        (WHEN, "2026-12-01", "2026-12-01T00:00:00Z"),
        (WHEN, "2026-12-01T09:00:00.250Z", "2026-12-01T09:00:00.250000Z"),
        (WHEN, None, None),
        (WHERE, {"latitude": -33, "longitude": 18.4}, {"latitude": -33.0, "longitude": 18.4}),
        (LANGUAGE, "ENG", "ENG"),
        (LANGUAGE, "ZUL", "ZUL"),
    ],
)
def test_values_in_canonical_form(f: Any, value: Any, canonical: Any) -> None:
    assert check_value(f, value) == canonical


@pytest.mark.parametrize(
    ("f", "value", "message"),
    [
        (AGE, "x", "age: expected INTEGER, got 'x'"),
        (AGE, 1.0, "age: expected INTEGER, got '1.0'"),
        (AGE, 2**63, "age: expected INTEGER"),
        (AGE, None, "age: may not be null"),
        (SCORE, True, "score: expected FLOAT"),
        (FLAG, "true", "flag: expected BOOLEAN, got 'true'"),
        (GENDER, "female", "gender: expected ENUM (one of MALE, FEMALE), got 'female'"),
        (WHEN, "2026-12-01T09:00:00+01:00", "when: expected DATETIME (ISO 8601, UTC)"),
        (WHEN, 1700000000, "when: expected DATETIME"),
        (WHERE, {"latitude": 0}, "where: expected LOCATION"),
        (WHERE, {"latitude": 0, "longitude": 0, "x": 1}, "where: expected LOCATION"),
        (WHERE, {"latitude": -90.1, "longitude": 0}, "where: expected LOCATION"),
        (LANGUAGE, "eng", "language: expected ENUM (an ISO 639-3 code, e.g. ENG), got 'eng'"),
        (LANGUAGE, "EN", "language: expected ENUM (an ISO 639-3 code"),
        (SECRET, "x", "secret: expected INTEGER (the value is private: not shown)"),
    ],
)
def test_values_of_the_wrong_type_are_refused_naming_the_field(
    f: Any, value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=r".") as caught:
        check_value(f, value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("f", "cell", "value"),
    [
        (AGE, " 42 ", 42),
        (AGE, "-3", -3),
        (SCORE, "2.5", 2.5),
        (SCORE, "3", 3.0),
        (SCORE, "1e3", 1000.0),
        (FLAG, "Yes", True),
        (FLAG, "no", False),
        (FLAG, "1", True),
        (FLAG, "FALSE", False),
        (GENDER, "female", "FEMALE"),
        (LANGUAGE, "eng", "ENG"),
        (WHEN, "1990-05-01", "1990-05-01T00:00:00Z"),
        (WHERE, "52.52,13.40", {"latitude": 52.52, "longitude": 13.4}),
        (WHERE, "-33.9; 18.4", {"latitude": -33.9, "longitude": 18.4}),
    ],
)
def test_csv_cells_are_read_as_their_type(f: Any, cell: str, value: Any) -> None:
    assert coerce_text(f, cell) == value


@pytest.mark.parametrize(
    ("f", "cell"),
    [
        (AGE, "x"),
        (AGE, "2.0"),
        (AGE, "1_000"),
        (SCORE, "nan"),
        (SCORE, "inf"),
        (SCORE, "2,5"),
        (FLAG, "maybe"),
        (FLAG, "y"),
        (GENDER, "unknown"),
        (LANGUAGE, "english"),
        (WHEN, "01/05/1990"),
        (WHERE, "52.52"),
        (WHERE, "91,0"),
    ],
)
def test_bad_csv_cells_are_refused_naming_the_field(f: Any, cell: str) -> None:
    with pytest.raises(ValueError, match=rf"^{f.name}: expected {f.type.value}"):
        coerce_text(f, cell)


def test_the_example_reason_of_the_issue() -> None:
    with pytest.raises(ValueError, match=r"^age: expected INTEGER, got 'x'$"):
        coerce_text(AGE, "x")


def test_iso_639_3_comes_whole_and_upper_case() -> None:
    codes = iso_639_3()
    assert len(codes) > 7_000
    assert codes["ENG"] == "English"
    assert {"ZUL", "XHO", "AFR", "NSO", "UND", "MUL"} <= set(codes)
    assert all(code.isupper() and len(code) == 3 for code in codes)


def test_bodies_that_are_not_json_are_refused_with_the_reason() -> None:
    with pytest.raises(InvalidSchema, match="the body is not JSON"):
        json_body(b"{nope", InvalidSchema)
    with pytest.raises(InvalidProfile, match="the body is not JSON"):
        json_body(b"", InvalidProfile)
    with pytest.raises(InvalidProfile, match="the body is not JSON"):
        json_body(b'{"age": NaN}', InvalidProfile)
    with pytest.raises(InvalidProfile, match="the body is not JSON"):
        json_body(b"\xff\xfe", InvalidProfile)
    assert json_body(b'{"a": 1}', InvalidProfile) == {"a": 1}
