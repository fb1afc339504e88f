"""Admin commands over HTTP and the CLI: legal ones apply, illegal ones change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tests.integration.dispatch_support import campaign_with_contacts, phone, states, sync_flags


def snapshot(engine: Engine, campaign_id: int) -> tuple[Any, ...]:
    with engine.connect() as conn:
        campaign = conn.execute(
            text("SELECT status, status_reason, updated_at FROM campaigns WHERE id = :c"),
            {"c": campaign_id},
        ).one()
        events = conn.execute(text("SELECT count(*) FROM contact_events")).scalar_one()
    return tuple(campaign), events, tuple(sorted(states(engine, campaign_id).items()))


def test_lifecycle_over_http(api: TestClient, db: Engine) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(5)])
    flags = sync_flags()

    started = api.post(f"/campaigns/{campaign_id}/start")
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "running"
    assert not flags.is_paused(campaign_id)

    paused = api.post(f"/campaigns/{campaign_id}/pause").json()
    assert paused["status"] == "paused" and paused["status_reason"] == "paused by admin"
    assert flags.is_paused(campaign_id)

    assert api.post(f"/campaigns/{campaign_id}/resume").json()["status"] == "running"
    assert not flags.is_paused(campaign_id)

    cancelled = api.post(f"/campaigns/{campaign_id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"]["canceled_by_admin"] == 5
    assert flags.is_paused(campaign_id)  # nothing of a cancelled campaign may go out


def test_start_and_resume_wake_dispatch_at_once(
    api: TestClient, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sending starts with a tick queued by the command, not up to a beat interval later."""
    from workers import dispatch as dispatch_task

    woken: list[str] = []
    monkeypatch.setattr(dispatch_task.tick, "apply_async", lambda *a, **k: woken.append("tick"))
    campaign_id = campaign_with_contacts(db, [phone(1)])
    api.post(f"/campaigns/{campaign_id}/start")
    api.post(f"/campaigns/{campaign_id}/pause")
    assert woken == ["tick"]
    api.post(f"/campaigns/{campaign_id}/resume")
    assert woken == ["tick", "tick"]
    # A broker that is down costs the command nothing: beat's tick follows anyway.
    monkeypatch.setattr(dispatch_task.tick, "apply_async", lambda *a, **k: 1 / 0)
    api.post(f"/campaigns/{campaign_id}/pause")
    assert api.post(f"/campaigns/{campaign_id}/resume").json()["status"] == "running"


def test_scheduled_start_over_http(api: TestClient, db: Engine) -> None:
    campaign_id = campaign_with_contacts(db, [phone(1)])
    body = {"at": "2099-12-01T09:00:00Z"}
    out = api.post(f"/campaigns/{campaign_id}/start", json=body).json()
    assert out["status"] == "scheduled" and out["scheduled_at"].startswith("2099-12-01T09:00")
    naive = campaign_with_contacts(db, [phone(2)])
    refused = api.post(f"/campaigns/{naive}/start", json={"at": "2099-12-01T09:00:00"})
    assert refused.status_code == 409 and refused.json()["code"] == "naive_time"


@pytest.mark.parametrize(
    ("setup", "command", "code"),
    [
        ([], "pause", "pause_not_allowed"),
        ([], "resume", "resume_not_allowed"),
        (["start"], "start", "start_not_allowed"),
        (["cancel"], "start", "start_not_allowed"),
        (["cancel"], "cancel", "cancel_not_allowed"),
        (["start"], "resume", "resume_not_allowed"),
    ],
)
def test_illegal_commands_are_refused_and_change_nothing(
    api: TestClient, db: Engine, setup: list[str], command: str, code: str
) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(3)])
    for step in setup:
        assert api.post(f"/campaigns/{campaign_id}/{step}").status_code == 200
    before = snapshot(db, campaign_id)
    flag_before = sync_flags().is_paused(campaign_id)

    response = api.post(f"/campaigns/{campaign_id}/{command}")

    assert response.status_code == 409
    assert response.json()["code"] == code
    assert response.json()["message"]
    assert snapshot(db, campaign_id) == before
    assert sync_flags().is_paused(campaign_id) == flag_before


def test_start_needs_contacts_and_a_template(api: TestClient, db: Engine) -> None:
    empty = api.post("/campaigns", json={"name": "e", "template": "t", "region": "DE"}).json()
    response = api.post(f"/campaigns/{empty['id']}/start")
    assert response.status_code == 409 and response.json()["code"] == "no_contacts"
    no_template = campaign_with_contacts(db, [phone(1)], template="")
    with db.begin() as conn:
        conn.execute(
            text("UPDATE campaigns SET template_name = NULL WHERE id = :c"), {"c": no_template}
        )
    response = api.post(f"/campaigns/{no_template}/start")
    assert response.status_code == 409 and response.json()["code"] == "no_template"
    assert api.post("/campaigns/999999/start").status_code == 404


def test_remove_reports_each_item(api: TestClient, db: Engine) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(4)])
    with db.connect() as conn:
        ids = (
            conn.execute(
                text("SELECT id FROM contacts WHERE campaign_id = :c ORDER BY id"),
                {"c": campaign_id},
            )
            .scalars()
            .all()
        )
    with db.begin() as conn:  # one contact was already sent before a pause
        conn.execute(text("UPDATE contacts SET state = 'sent' WHERE id = :i"), {"i": ids[3]})

    body = {
        "contact_ids": [ids[0], 999999, ids[3]],
        "phones": ["0151 20000001", "+49 151 99999999", "not a phone"],
    }
    response = api.post(f"/campaigns/{campaign_id}/contacts/remove", json=body)

    assert response.status_code == 200, response.text
    report = response.json()
    assert [(i["contact"], i["result"]) for i in report["items"]] == [
        (str(ids[0]), "SUCCESS"),
        ("999999", "NOT_FOUND"),
        (str(ids[3]), "FAILURE"),
        ("0151 20000001", "SUCCESS"),
        ("+49 151 99999999", "NOT_FOUND"),
        ("not a phone", "FAILURE"),
    ]
    assert report["items"][-1]["message"].startswith("not a phone number: ")
    assert report["removed"] == 2
    got = states(db, campaign_id)
    assert got[phone(0)] == "removed" and got[phone(1)] == "removed"
    assert got[phone(2)] == "initial" and got[phone(3)] == "sent"


def test_remove_from_a_running_campaign_is_refused(api: TestClient, db: Engine) -> None:
    campaign_id = campaign_with_contacts(db, [phone(1)])
    api.post(f"/campaigns/{campaign_id}/start")
    before = snapshot(db, campaign_id)
    response = api.post(f"/campaigns/{campaign_id}/contacts/remove", json={"contact_ids": [1]})
    assert response.status_code == 409 and response.json()["code"] == "remove_not_allowed"
    assert snapshot(db, campaign_id) == before


def test_admin_commands_need_a_token(db: Engine) -> None:
    from campaigns.api.app import create_app

    with TestClient(create_app()) as anonymous:
        assert anonymous.post("/campaigns/1/pause").status_code == 401


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "campaigns.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_admin_commands_and_refusals(db: Engine) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(2)])
    refused = cli("pause", str(campaign_id), "--json")
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["error"]["code"] == "pause_not_allowed"
    human = cli("pause", str(campaign_id))
    assert (human.returncode, human.stdout) == (2, "")
    assert human.stderr.startswith("error: ") and "pause" in human.stderr

    started = cli("start", str(campaign_id), "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["status"] == "running"
    assert json.loads(cli("pause", str(campaign_id), "--json").stdout)["status"] == "paused"
    removed = cli("remove", str(campaign_id), "--phone", phone(1), "--contact", "424242", "--json")
    assert removed.returncode == 0, removed.stderr
    report = json.loads(removed.stdout)
    assert [i["result"] for i in report["items"]] == ["NOT_FOUND", "SUCCESS"]
    status = json.loads(cli("status", str(campaign_id), "--json").stdout)
    assert status["counts"]["removed"] == 1 and status["status"] == "paused"
    assert cli("start", str(campaign_id), "--at", "tomorrow").returncode == 2
