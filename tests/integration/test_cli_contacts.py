"""``wa-campaigns contact ...`` and the campaign flags of the registry, on the real stores:
--json shapes, refusals (exit 2, one shape)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from campaigns.cli.main import main
from campaigns.domain.registry import Change
from tests.integration.registry_support import learn
from tests.integration.test_cli import run

DE = "+4915123456701"
DE2 = "+4915123456702"


def test_contact_commands(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, blocked = run(capsys, "contact", "block", DE, "--reason", "fraud", "--json")
    assert (code, blocked["status"], blocked["blocked_reason"]) == (0, "BLOCKED", "fraud")
    code, shown = run(capsys, "contact", "show", DE[1:], "--json")
    assert (code, shown["phone_e164"], shown["status"]) == (0, DE, "BLOCKED")
    assert run(capsys, "contact", "unblock", DE, "--json")[1]["status"] is None
    out = run(capsys, "contact", "opt-out", DE, "--source", "phone call", "--json")[1]
    assert (out["opted_out"], out["opt_out_source"]) == (True, "phone call")
    back = run(capsys, "contact", "opt-in", DE, "--json")[1]
    assert (back["opted_out"], back["opted_in"], back["opt_in_source"]) == (False, True, "operator")
    code, removed = run(capsys, "contact", "remove", DE, "--json")
    assert (code, removed) == (0, {"phone_e164": DE, "removed": True, "opted_out": False})

    code, missing = run(capsys, "contact", "show", DE, "--json")
    assert (code, missing["error"]["code"]) == (2, "contact_not_found")
    code, bad = run(capsys, "contact", "block", "hello", "--json")
    assert (code, bad["error"]["code"]) == (2, "invalid_phone")
    assert main(["contact", "show", "hello"]) == 2
    assert "not a phone number" in capsys.readouterr().err


def test_contact_bulk_and_check(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    learn(db, DE2, Change.UNAVAILABLE, code=131026)
    listed = tmp_path / "phones.txt"
    listed.write_text(f"{DE2}\n\nnope\n")
    code, report = run(capsys, "contact", "bulk", "remove", DE, "--file", str(listed), "--json")
    assert code == 0
    assert [(r["input"], r["result"]) for r in report["results"]] == [
        (DE, "NOT_FOUND"),
        (DE2, "SUCCESS"),
        ("nope", "FAILURE"),
    ]
    # No WHATSAPP_CONTACTS_URL here: the registry answers (DE2's record was removed).
    code, checked = run(capsys, "contact", "check", DE2, "x", "--json")
    assert code == 0
    assert [(c["input"], c["status"]) for c in checked["contacts"]] == [
        (DE2, "failed"),
        ("x", "failed"),
    ]


def test_campaign_create_takes_the_registry_flags(
    db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, campaign = run(
        capsys,
        "campaign", "create", "--name", "c", "--region", "DE",
        "--require-opt-in", "--check-contacts", "--json",
    )  # fmt: skip
    assert code == 0
    assert (campaign["require_opt_in"], campaign["check_contacts"]) == (True, True)
    assert campaign["contacts_checked_at"] is None
