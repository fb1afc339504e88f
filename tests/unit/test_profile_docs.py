"""What a profile write stores (PUT, PATCH, DELETE), the registry's opt-in behind
``opted_in``, reads under older schemas, and the profile values uploads and templates use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from campaigns.domain.profile_docs import (
    OptIn,
    PeopleValues,
    WriteMode,
    fill_parameters,
    filled,
    opt_in_write,
    plan_write,
    profile_columns,
    render,
    stage_profile,
    template_columns,
)
from campaigns.domain.profiles import NO_SCHEMA, InvalidProfile, schema_of
from tests.unit.test_profile_schemas import SEED_004

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
V1 = schema_of("u1", "0.0.1-alpha", SEED_004["fields"])
V2 = schema_of(
    "u2",
    "0.0.2",
    [
        *SEED_004["fields"],
        {"name": "age", "display": "Age", "type": "INTEGER", "default": 0, "is_private": False},
        {
            "name": "risk_profile",
            "display": "Risk",
            "type": "FLOAT",
            "default": 2.0,
            "is_private": False,
        },
        {
            "name": "date_of_birth",
            "display": "Born",
            "type": "DATETIME",
            "default": None,
            "null": True,
            "is_private": False,
        },
    ],
)
NOBODY = PeopleValues()
WA = PeopleValues(whatsapp_id="27123456789", whatsapp_profile_name="Fiz")


def test_a_profile_with_nothing_stored_reads_as_the_defaults() -> None:
    fields = render(V2, None, NOBODY)
    assert fields == {
        "name": None,
        "surname": None,
        "location": None,
        "language": None,
        "opted_in": False,
        "opted_in_at": None,
        "birthday": None,
        "whatsapp_profile_name": None,
        "whatsapp_id": None,
        "consent": False,
        "gender": "UNDISCLOSED",
        "age": 0,
        "risk_profile": 2.0,
        "date_of_birth": None,
    }


def test_put_stores_the_defaults_under_the_values_given() -> None:
    write = plan_write(V2, WriteMode.PUT, {"name": "Fizbo", "age": 3}, NOBODY)
    assert not write.merge
    assert write.doc["name"] == "Fizbo"
    assert write.doc["age"] == 3
    assert write.doc["risk_profile"] == 2.0
    assert write.doc["language"] is None
    assert "opted_in" not in write.doc  # the registry keeps it
    assert write.opt_in is None  # nothing recorded, nothing to withdraw


def test_patch_stores_only_what_it_names() -> None:
    write = plan_write(V2, WriteMode.PATCH, {"name": "Fizbo", "language": "ENG"}, NOBODY)
    assert write.merge
    assert write.doc == {"name": "Fizbo", "language": "ENG"}


def test_delete_stores_the_defaults() -> None:
    write = plan_write(V2, WriteMode.DELETE, None, NOBODY)
    assert not write.merge
    assert write.doc["gender"] == "UNDISCLOSED"
    assert write.doc["age"] == 0


@pytest.mark.parametrize("body", [[], "x", 3, None, [{"name": "x"}]])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    with pytest.raises(InvalidProfile, match="the body must be a JSON object"):
        plan_write(V2, WriteMode.PATCH, body, NOBODY)


def test_a_field_the_newest_schema_lacks_is_refused() -> None:
    with pytest.raises(InvalidProfile) as caught:
        plan_write(V1, WriteMode.PATCH, {"age": 2, "name": "x"}, NOBODY)
    assert caught.value.code == "invalid_profile"
    assert "'age': not a field of the newest schema (0.0.1-alpha, u1)" in caught.value.message
    with pytest.raises(InvalidProfile, match="no schema was created yet"):
        plan_write(NO_SCHEMA, WriteMode.PUT, {"age": 2}, NOBODY)


def test_every_bad_field_is_named() -> None:
    with pytest.raises(InvalidProfile) as caught:
        plan_write(V2, WriteMode.PUT, {"age": "x", "gender": "male", "nope": 1}, NOBODY)
    message = caught.value.message
    assert "age: expected INTEGER, got 'x'" in message
    assert "gender: expected ENUM" in message
    assert "'nope': not a field" in message


def test_whatsapp_fields_may_be_repeated_not_changed() -> None:
    same = {"whatsapp_id": "27123456789", "whatsapp_profile_name": "Fiz", "name": "F"}
    assert plan_write(V2, WriteMode.PATCH, same, WA).doc == {"name": "F"}
    with pytest.raises(InvalidProfile, match="whatsapp_id: kept from WhatsApp, read-only"):
        plan_write(V2, WriteMode.PATCH, {"whatsapp_id": "1"}, WA)


# --------------------------------------------------------------------------- the opt-in

IN = PeopleValues(opted_in=True, opted_in_at=T0)


@pytest.mark.parametrize(
    ("people", "given", "replace", "change"),
    [
        (NOBODY, {}, False, None),
        (NOBODY, {"name": "x"}, False, None),
        (NOBODY, {"opted_in": True}, False, OptIn(True)),
        (IN, {"opted_in": True}, False, None),
        (IN, {"opted_in": True}, True, None),
        (IN, {"opted_in_at": "2026-12-01T09:00:00Z"}, False, None),
        (
            IN,
            {"opted_in_at": "2026-12-02T00:00:00Z"},
            False,
            OptIn(True, T0.replace(day=2, hour=0)),
        ),
        (
            NOBODY,
            {"opted_in": True, "opted_in_at": "2026-11-30"},
            False,
            OptIn(True, datetime(2026, 11, 30, tzinfo=UTC)),
        ),
        (IN, {"opted_in": False}, False, OptIn(False)),
        (NOBODY, {"opted_in": False}, False, None),
        (IN, {}, True, OptIn(False)),  # a PUT or DELETE leaving it out: the default
        (IN, {"name": "x"}, False, None),  # a PATCH leaving it out: it stays
        (PeopleValues(opted_in=False, opted_in_at=T0), {}, True, OptIn(False)),
    ],
)
def test_opt_in_writes(
    people: PeopleValues, given: dict[str, Any], replace: bool, change: OptIn | None
) -> None:
    assert opt_in_write(people, given, replace) == change


def test_an_opt_in_time_goes_with_an_opt_in() -> None:
    with pytest.raises(InvalidProfile, match="only an opt-in has a time"):
        opt_in_write(NOBODY, {"opted_in": False, "opted_in_at": "2026-12-01T00:00:00Z"}, False)
    with pytest.raises(InvalidProfile, match="only an opt-in has a time"):
        opt_in_write(NOBODY, {"opted_in_at": "2026-12-01T00:00:00Z"}, False)
    with pytest.raises(InvalidProfile, match="an opt-in has a time"):
        opt_in_write(IN, {"opted_in_at": None}, False)


def test_the_registry_opt_in_is_what_a_read_shows() -> None:
    fields = render(V1, {"opted_in": False, "name": "x"}, IN)  # a stray stored key is ignored
    assert fields["opted_in"] is True
    assert fields["opted_in_at"] == "2026-12-01T09:00:00Z"
    assert fields["whatsapp_id"] is None


# --------------------------------------------------------------------------- older schemas


def test_an_older_schema_shows_its_own_fields_only() -> None:
    doc = {"name": "Fizbo", "age": 2, "gender": "FEMALE", "risk_profile": 3.5}
    old = render(V1, doc, NOBODY)
    assert "age" not in old
    assert "risk_profile" not in old
    assert old["gender"] == "FEMALE"
    assert old["name"] == "Fizbo"
    new = render(V2, doc, NOBODY)
    assert new["age"] == 2
    assert new["date_of_birth"] is None


def test_a_value_of_another_type_reads_as_the_default() -> None:
    changed = schema_of(
        "u3",
        "3",
        [{"name": "age", "display": "Age", "type": "STRING", "default": "?", "is_private": False}],
    )
    assert render(changed, {"age": 2}, NOBODY)["age"] == "?"
    assert render(V2, {"age": 2}, NOBODY)["age"] == 2


# --------------------------------------------------------------------------- templates


def test_template_parameters_come_from_the_upload_else_the_profile() -> None:
    fields = [V2.get(n) for n in ("name", "age", "opted_in", "location", "date_of_birth")]
    doc = {"name": "Fizbo", "age": 7, "location": {"latitude": 1.5, "longitude": -2.0}}
    out = fill_parameters(
        {"name": "From CSV", "code": "X1", "age": " "},
        [f for f in fields if f is not None],
        doc,
        IN,
    )
    assert out == {
        "name": "From CSV",
        "code": "X1",
        "age": "7",
        "opted_in": "true",
        "location": "1.5,-2.0",
        "date_of_birth": "",
    }


def test_filled_says_which_fields_hold_a_value() -> None:
    fields = [f for f in (V2.get("name"), V2.get("age"), V2.get("opted_in_at")) if f]
    assert filled(fields, None, NOBODY) == {"age"}  # age has a default
    assert filled(fields, {"name": "x"}, IN) == {"name", "age", "opted_in_at"}
    assert filled(fields, {"name": None}, NOBODY) == {"age"}


def test_template_variables_that_are_fields_need_no_column() -> None:
    assert template_columns(V2, ["name", "code", "age", "gender"]) == ["code"]
    assert template_columns(NO_SCHEMA, ["name", "code"]) == ["code"]


# --------------------------------------------------------------------------- uploads


def test_columns_named_like_fields_fill_the_profile() -> None:
    columns = ("first_name", "Age", "consent", "opted_in", "gender", "age")
    spec = profile_columns(V2, columns, ["name", "age", "first_name"])
    assert [(j, f.name) for j, f in spec.columns] == [(1, "age"), (2, "consent"), (4, "gender")]
    assert spec.hidden == {2}  # consent is private: never stored with the contact
    # name: no column (the profile must have it); age: never null (a default), so no check
    assert [(f.name, j) for f, j in spec.fallback] == [("name", None)]


def test_a_record_s_profile_cells_become_a_patch() -> None:
    spec = profile_columns(V2, ("Age", "consent", "gender", "name"), ["name"])
    patch, problem, needs = stage_profile(spec, ("42", "yes", "female", "Fizbo"))
    assert problem is None
    assert needs == ()
    assert json.loads(patch or "") == {
        "age": 42,
        "consent": True,
        "gender": "FEMALE",
        "name": "Fizbo",
    }
    patch, problem, needs = stage_profile(spec, ("", " ", "", ""))
    assert (patch, problem, needs) == (None, None, ("name",))


def test_a_bad_cell_refuses_the_record_naming_the_field() -> None:
    spec = profile_columns(V2, ("age", "consent"), [])
    assert stage_profile(spec, ("x", "yes"))[1] == "age: expected INTEGER, got 'x'"
    # consent is private: its value is not repeated in the reason (the reason is exported)
    assert stage_profile(spec, ("1", "maybe"))[1] == (
        "consent: expected BOOLEAN (the value is private: not shown)"
    )
