"""The CLI against real Postgres/Redis: --json shapes and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from campaigns.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # --json: exactly one JSON object on stdout
    return code, json.loads(out[0])


def test_create_upload_status_export(
    db: Engine, ingest_worker: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, campaign = run(
        capsys,
        "campaign",
        "create",
        "--name",
        "Black Friday",
        "--template",
        "bf_offer",
        "--language",
        "en",
        "--region",
        "DE",
        "--json",
    )
    assert code == 0
    assert (campaign["status"], campaign["region"], campaign["total"]) == ("draft", "DE", 0)
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("Mobile;Name\n0151 23456701;Anna\n;Empty\n0151 23456701;Dup\n")
    code, upload = run(capsys, "upload", str(campaign["id"]), str(csv_file), "--json")
    assert code == 0
    assert (upload["status"], upload["valid"], upload["invalid"]) == ("completed", 1, 2)
    assert upload["reasons"] == {"empty_phone": 1, "duplicate": 1}
    code, status = run(capsys, "status", str(campaign["id"]), "--json")
    assert status["counts"]["initial"] == 1 and status["counts"]["invalid_record"] == 2
    assert main(["contacts", str(campaign["id"]), "--state", "invalid_record", "--csv"]) == 0
    exported = capsys.readouterr().out.splitlines()
    assert exported[0].startswith("line,phone_raw")
    assert [line.split(",")[0] for line in exported[1:]] == ["3", "4"]


def test_refusals_exit_2_with_a_message(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, campaign = run(capsys, "campaign", "create", "--name", "x", "--region", "DE", "--json")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    code, refused = run(capsys, "upload", str(campaign["id"]), str(empty), "--json")
    assert code == 2
    assert refused["error"]["code"] == "empty_file"
    code, refused = run(capsys, "upload", "999", str(empty), "--json")
    assert (code, refused["error"]["code"]) == (2, "campaign_not_found")
    code, refused = run(
        capsys, "campaign", "create", "--name", "x", "--region", "Germany", "--json"
    )
    assert (code, refused["error"]["code"]) == (2, "invalid_campaign")
    code, refused = run(capsys, "contacts", str(campaign["id"]), "--state", "bogus", "--json")
    assert code == 2 and "initial" in refused["error"]["message"]


def test_token_create(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, created = run(capsys, "token", "create", "--name", "ops", "--json")
    assert code == 0 and created["token"].startswith("wac_") and created["name"] == "ops"
