"""``wa-campaigns retry`` against real Postgres and Redis: the same answer as the HTTP API,
its filters as options, human output, and refusals that exit 2 in the one shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from campaigns.cli.main import main
from tests.integration.dispatch_support import campaign_with_contacts, phone, sync_flags
from tests.integration.test_retry import by_name, set_up, snapshot


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # --json: exactly one JSON object on stdout
    return code, json.loads(out[0])


def test_retry_queues_the_failed_and_answers_as_the_api(
    api: TestClient,
    db: Engine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers import dispatch as dispatch_task

    woken: list[str] = []
    monkeypatch.setattr(dispatch_task.tick, "apply_async", lambda *a, **k: woken.append("tick"))
    campaign_id = set_up(db, api)
    sync_flags().set_paused(campaign_id)
    woken.clear()  # the start's

    code, answer = run(
        capsys,
        *("retry", str(campaign_id), "--state", "error", "--error-code", "131047,131000"),
        "--json",
    )

    assert code == 0
    assert list(answer) == ["campaign_id", "queued", "total", "skipped", "warning", "campaign"]
    assert answer["queued"] == {"error": 2, "sending_failed": 0} and answer["total"] == 2
    assert answer["skipped"] == {
        "opted_out": 0,
        "unavailable": 0,
        "blocked": 1,
        "outcome_unknown": 0,
    }
    assert answer["warning"] is None and answer["campaign"]["status"] == "running"
    assert not sync_flags().is_paused(campaign_id)
    assert woken == ["tick"]
    rows = by_name(db, campaign_id)
    assert rows["window"]["state"] == rows["exhausted"]["state"] == "retry_scheduled"

    # The rest, the unknown outcome included: a warning. Repeated options add up.
    code, answer = run(
        capsys,
        *("retry", str(campaign_id), "--state", "error", "--state", "sending_failed"),
        *("--include-unknown", "--json"),
    )
    assert code == 0
    assert answer["queued"] == {"error": 1, "sending_failed": 2}
    assert "may already have delivered" in answer["warning"]
    assert (answer["skipped"]["opted_out"], answer["skipped"]["unavailable"]) == (1, 1)
    assert woken == ["tick", "tick"]


def test_human_output(api: TestClient, db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    campaign_id = set_up(db, api)
    assert main(["retry", str(campaign_id), "--reason-code", "not_opted_in"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"campaign {campaign_id}: queued 1 (error 0, sending_failed 1)",
        "skipped: none",
        "campaign is running",
    ]
    assert main(["retry", str(campaign_id), "--include-unknown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"campaign {campaign_id}: queued 4 (error 3, sending_failed 1)"
    assert out[1] == "skipped: opted_out 1, unavailable 1, blocked 1"
    assert out[-1].startswith("warning: 1 queued contact had an unknown outcome")


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--state", "delivered"], "invalid_retry_filter"),
        (["--state", "error,retry_scheduled"], "invalid_retry_filter"),
        (["--error-code", "131049,x"], "invalid_retry_filter"),
        (["--error-code", "-5"], "invalid_retry_filter"),
        (["--reason-code", "bogus"], "invalid_retry_filter"),
    ],
)
def test_bad_filters_exit_2_and_change_nothing(
    api: TestClient,
    db: Engine,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: str,
) -> None:
    campaign_id = set_up(db, api)
    before = snapshot(db, campaign_id)
    exit_code, refused = run(capsys, "retry", str(campaign_id), *argv, "--json")
    assert (exit_code, list(refused), refused["error"]["code"]) == (2, ["error"], code)
    assert set(refused["error"]) == {"code", "message"} and refused["error"]["message"]
    assert main(["retry", str(campaign_id), *argv]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"error: {refused['error']['message']}\n")
    assert snapshot(db, campaign_id) == before


def test_refused_campaigns_exit_2(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    draft = campaign_with_contacts(db, [phone(1)])
    before = snapshot(db, draft)
    code, refused = run(capsys, "retry", str(draft), "--json")
    assert (code, refused["error"]["code"]) == (2, "retry_not_allowed")
    assert "cannot retry a draft campaign" in refused["error"]["message"]
    assert snapshot(db, draft) == before
    code, refused = run(capsys, "retry", "987654321", "--json")
    assert (code, refused["error"]["code"]) == (2, "campaign_not_found")
