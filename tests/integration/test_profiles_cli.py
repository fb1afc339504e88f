"""The profile commands against the real Postgres: ``schema create|list|show``, ``contact
profile`` and ``contact profile-set``, their --json shapes and refusals (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

from campaigns.cli.main import main
from campaigns.domain.registry import Change
from tests.integration.registry_support import learn
from tests.integration.test_cli import run
from tests.unit.test_profile_schemas import SEED_004

DE = "+4915123456701"


def test_schema_create_list_show_and_profiles(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {**SEED_004, "fields": [*SEED_004["fields"], {"name": "age", "display": "Age",
            "type": "INTEGER", "default": 0, "is_private": False}]}  # fmt: skip
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(body))
    code, created = run(capsys, "schema", "create", str(path), "--json")
    assert code == 0
    assert (created["version"], created["fields"]) == (body["version"], body["fields"])
    code, listed = run(capsys, "schema", "list", "--json")
    assert [s["uuid"] for s in listed["schemas"]] == [created["uuid"]]
    code, shown = run(capsys, "schema", "show", created["uuid"], "--json")
    assert shown == created
    learn(db, DE, Change.SEEN)
    code, profile = run(capsys, "contact", "profile", DE, "--json")
    assert code == 0
    assert (profile["schema"], profile["generation"]) == (created["uuid"], 0)
    assert profile["fields"]["gender"] == "UNDISCLOSED"
    code, profile = run(
        capsys, "contact", "profile-set", DE, "age=31", "consent=yes", "gender=female",
        "location=52.52,13.40", "--json",
    )  # fmt: skip
    assert code == 0
    assert profile["generation"] == 1
    fields = profile["fields"]
    assert (fields["age"], fields["consent"], fields["gender"]) == (31, True, "FEMALE")
    assert fields["location"] == {"latitude": 52.52, "longitude": 13.4}
    code, profile = run(capsys, "contact", "profile-set", DE, "name=Anna", "--replace", "--json")
    assert (profile["generation"], profile["fields"]["age"]) == (2, 0)
    assert main(["contact", "profile", DE]) == 0
    human = capsys.readouterr().out
    assert "generation 2" in human
    assert "  name: Anna" in human


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["contact", "profile-set", DE, "age=x"], "invalid_profile"),
        (["contact", "profile-set", DE, "shoe=44"], "invalid_profile"),
        (["contact", "profile-set", DE, "age"], "invalid_profile"),
        (["contact", "profile-set", DE, "age=3", "--if-match", "7"], "precondition_failed"),
        (["contact", "profile", "+4915123456799"], "contact_not_found"),
        (["contact", "profile", DE, "--schema", "nope"], "schema_not_found"),
        (["schema", "show", "8d6a1f1e-2d3c-4b5a-9e8f-000000000000"], "schema_not_found"),
    ],
)
def test_refusals_exit_2_with_the_error(
    db: Engine, capsys: pytest.CaptureFixture[str], argv: list[str], code: str
) -> None:
    body = {"version": "1", "fields": [{"name": "age", "display": "Age", "type": "INTEGER",
            "default": 0, "is_private": False}]}  # fmt: skip
    from campaigns.services import profiles

    profiles.create_schema(db, body)
    learn(db, DE, Change.SEEN)
    exit_code, refused = run(capsys, *argv, "--json")
    assert exit_code == 2
    assert refused["error"]["code"] == code
    assert refused["error"]["message"]


def test_a_schema_file_that_breaks_a_rule_is_refused(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"version": "1", "fields": [{"name": "Age"}]}')
    code, refused = run(capsys, "schema", "create", str(path), "--json")
    assert code == 2
    assert refused["error"]["code"] == "invalid_schema"
    assert "must be lower case" in refused["error"]["message"]
    path.write_text("{not json")
    code, refused = run(capsys, "schema", "create", str(path), "--json")
    assert (code, refused["error"]["code"]) == (2, "invalid_schema")
    code, listed = run(capsys, "schema", "list", "--json")
    assert listed == {"schemas": []}
