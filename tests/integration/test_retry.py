"""Retrying only the failed on real Postgres and Redis: every filter over HTTP, the people it
skips and why, the outcome-unknown warning, the refusals, the campaign's status and pause
flag, dispatch woken; the statement's verdicts checked against the pure rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from campaigns.domain.dispatch import OUTCOME_UNKNOWN
from campaigns.domain.registry import Change, PersonStatus, Standing
from campaigns.domain.retry import FailedContact, RetryFilter, Verdict, retry_filter, verdict
from campaigns.domain.states import ContactState
from tests.integration.dispatch_support import (
    campaign_with_contacts,
    contact_rows,
    phone,
    sync_flags,
)
from tests.integration.registry_support import learn

C = ContactState

# name -> (state, reason, reason_code, error_code, attempts); "sent" for every other number.
FAILURES: dict[str, tuple[str, str | None, str | None, int | None, int]] = {
    "window": ("error", "131047 outside the 24 h window", None, 131047, 1),
    "exhausted": ("error", "retries exhausted: 131000 generic platform error", None, 131000, 5),
    "unknown": ("error", OUTCOME_UNKNOWN, None, None, 1),
    "capped": ("sending_failed", "131049 not delivered (marketing cap)", None, 131049, 1),
    "no_opt_in": ("sending_failed", "no opt-in recorded", "not_opted_in", None, 0),
    "stopped": ("sending_failed", "131050 recipient stopped marketing", None, 131050, 1),
    "blocked": ("error", "131047 outside the 24 h window", None, 131047, 1),
    "absent": ("sending_failed", "131026 undeliverable", None, 131026, 1),
    "failed_later": ("delivery_failed", "131049 by webhook", None, 131049, 1),
}
NAMES = [*FAILURES, "sent"]


def numbers(base: int = 0) -> dict[str, str]:
    return {name: phone(base + i) for i, name in enumerate(NAMES)}


NUMBER = numbers()


def set_up(db: Engine, api: TestClient, *, status: str = "completed", base: int = 0) -> int:
    """A started campaign whose contacts ended as FAILURES say, its people as the registry
    learnt them (stopped: opted out, blocked: blocked, absent: unavailable); ``status``.
    ``base``: the numbers of another set (the people of one set refuse it at upload)."""
    number = numbers(base)
    campaign_id = campaign_with_contacts(db, list(number.values()))
    assert api.post(f"/campaigns/{campaign_id}/start").status_code == 200
    learn(db, number["stopped"], Change.OPTED_OUT, source="platform 131050")
    learn(db, number["blocked"], Change.BLOCKED, reason="fraud")
    learn(db, number["absent"], Change.UNAVAILABLE, code=131026)
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE contacts SET state = 'sent', attempts = 1, finished_at = now() "
                "WHERE campaign_id = :c"
            ),
            {"c": campaign_id},
        )
        for name, (state, reason, code, error, attempts) in FAILURES.items():
            conn.execute(
                text(
                    "UPDATE contacts SET state = :s, reason = :r, reason_code = :rc, "
                    "error_code = :e, error_detail = 'detail', attempts = :a "
                    "WHERE campaign_id = :c AND phone_e164 = :p"
                ),
                {"s": state, "r": reason, "rc": code, "e": error, "a": attempts}
                | {"c": campaign_id, "p": number[name]},
            )
        if status != "running":
            conn.execute(
                text(
                    "UPDATE campaigns SET status = :s, finished_at = "
                    "CASE WHEN :s = 'completed' THEN now() END WHERE id = :c"
                ),
                {"s": status, "c": campaign_id},
            )
    return campaign_id


def by_name(db: Engine, campaign_id: int) -> dict[str, dict[str, Any]]:
    rows = {r["phone_e164"]: r for r in contact_rows(db, campaign_id)}
    return {name: rows[number] for name, number in NUMBER.items()}


def standings(db: Engine) -> dict[str, Standing]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT phone_e164, status, opted_out, opted_in FROM people "
                "WHERE phone_e164 = ANY(:p)"
            ),
            {"p": list(NUMBER.values())},
        )
        found = {
            str(r.phone_e164): Standing(
                PersonStatus(r.status) if r.status else None, r.opted_out, r.opted_in
            )
            for r in rows
        }
    return {name: found.get(number, Standing()) for name, number in NUMBER.items()}


def expected_verdicts(db: Engine, campaign_id: int, rule: RetryFilter) -> dict[str, Verdict]:
    """The pure rule's verdict for every contact, from what the database holds now."""
    people = standings(db)
    out: dict[str, Verdict] = {}
    for name, row in by_name(db, campaign_id).items():
        contact = FailedContact(
            C(row["state"]), row["reason"], row["reason_code"], row["error_code"], people[name]
        )
        found = verdict(contact, rule)
        if found is not None:
            out[name] = found
    return out


def events_of(db: Engine, campaign_id: int) -> list[tuple[str, str, str]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT from_status, to_status, detail FROM campaign_events "
                "WHERE campaign_id = :c ORDER BY id"
            ),
            {"c": campaign_id},
        )
        return [(str(a), str(b), str(d)) for a, b, d in rows]


def contact_events(db: Engine, campaign_id: int) -> dict[int, list[tuple[str, str, str]]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT contact_id, from_state, to_state, detail FROM contact_events "
                "WHERE campaign_id = :c AND source = 'admin' ORDER BY id"
            ),
            {"c": campaign_id},
        )
        out: dict[int, list[tuple[str, str, str]]] = {}
        for cid, a, b, d in rows:
            out.setdefault(int(cid), []).append((str(a), str(b), str(d)))
        return out


BODIES: list[tuple[dict[str, Any], set[str], dict[str, int]]] = [
    (
        {},
        {"window", "exhausted", "capped", "no_opt_in"},
        {"opted_out": 1, "unavailable": 1, "blocked": 1, "outcome_unknown": 1},
    ),
    (
        {"states": ["error"]},
        {"window", "exhausted"},
        {"opted_out": 0, "unavailable": 0, "blocked": 1, "outcome_unknown": 1},
    ),
    (
        {"states": ["sending_failed"], "reason_codes": ["not_opted_in"]},
        {"no_opt_in"},
        {"opted_out": 0, "unavailable": 0, "blocked": 0, "outcome_unknown": 0},
    ),
    (
        {"error_codes": [131049, 131050]},
        {"capped"},
        {"opted_out": 1, "unavailable": 0, "blocked": 0, "outcome_unknown": 0},
    ),
    (
        {"states": ["error", "sending_failed"], "error_codes": [131047, 131026]},
        {"window"},
        {"opted_out": 0, "unavailable": 1, "blocked": 1, "outcome_unknown": 0},
    ),
    (
        {"include_unknown": True},
        {"window", "exhausted", "unknown", "capped", "no_opt_in"},
        {"opted_out": 1, "unavailable": 1, "blocked": 1, "outcome_unknown": 0},
    ),
    (
        {"states": ["error"], "error_codes": [131000], "include_unknown": True},
        {"exhausted"},
        {"opted_out": 0, "unavailable": 0, "blocked": 0, "outcome_unknown": 0},
    ),
]


def rule_of(body: Mapping[str, Any]) -> RetryFilter:
    return retry_filter(
        states=body.get("states"),
        reason_codes=body.get("reason_codes"),
        error_codes=body.get("error_codes"),
        include_unknown=bool(body.get("include_unknown")),
    )


def _case_id(value: object) -> str:
    # Sets print in hash order, which differs between xdist workers: ids must be stable.
    return str(sorted(value)) if isinstance(value, set) else str(value)


@pytest.mark.parametrize(("body", "queued", "skipped"), BODIES, ids=_case_id)
def test_every_filter_queues_what_it_names_and_skips_refused_people(
    api: TestClient, db: Engine, body: dict[str, Any], queued: set[str], skipped: dict[str, int]
) -> None:
    campaign_id = set_up(db, api)
    before = by_name(db, campaign_id)
    expected = expected_verdicts(db, campaign_id, rule_of(body))

    response = api.post(f"/campaigns/{campaign_id}/retry", json=body)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert list(answer) == ["campaign_id", "queued", "total", "skipped", "warning", "campaign"]
    by_state = {s: sum(FAILURES[n][0] == s for n in queued) for s in ("error", "sending_failed")}
    assert answer["queued"] == by_state and answer["total"] == len(queued)
    assert answer["skipped"] == skipped
    if "unknown" in queued:
        assert "may already have delivered" in answer["warning"]
    else:
        assert answer["warning"] is None
    assert answer["campaign"]["status"] == "running"
    assert answer["campaign"]["finished_at"] is None
    assert answer["campaign"]["counts"]["retry_scheduled"] == len(queued)

    after = by_name(db, campaign_id)
    # The statement agrees with the pure rule, contact by contact.
    assert {n for n, v in expected.items() if v is Verdict.QUEUED} == queued
    assert sum(v is not Verdict.QUEUED for v in expected.values()) == sum(skipped.values())
    events = contact_events(db, campaign_id)
    for name, row in after.items():
        if name in queued:
            assert row["state"] == "retry_scheduled"
            assert (row["attempts"], row["error_code"], row["reason_code"]) == (0, None, None)
            assert row["finished_at"] is None and row["reason"] == "retry by admin"
            assert row["next_attempt_at"] <= row["updated_at"]
            state, reason = before[name]["state"], before[name]["reason"]
            (event,) = events[row["id"]]
            assert event[:2] == (state, "retry_scheduled")
            assert f"after {before[name]['attempts']} attempt(s)" in event[2]
            assert reason in event[2]
        else:
            assert row == before[name], name
            assert row["id"] not in events


def test_sending_failed_of_an_opted_out_person_is_never_retried_whatever_the_filters(
    api: TestClient, db: Engine
) -> None:
    campaign_id = set_up(db, api)
    body = {
        "states": ["sending_failed"],
        "error_codes": [131050],
        "reason_codes": [],
        "include_unknown": True,
    }
    answer = api.post(f"/campaigns/{campaign_id}/retry", json=body).json()
    assert (answer["total"], answer["skipped"]["opted_out"]) == (0, 1)
    assert by_name(db, campaign_id)["stopped"]["state"] == "sending_failed"
    # An opt-in recorded since lifts it: the person's standing now is what counts.
    learn(db, NUMBER["stopped"], Change.OPTED_IN, source="operator")
    answer = api.post(f"/campaigns/{campaign_id}/retry", json=body).json()
    assert (answer["total"], answer["queued"]["sending_failed"]) == (1, 1)
    assert by_name(db, campaign_id)["stopped"]["state"] == "retry_scheduled"


def snapshot(db: Engine, campaign_id: int) -> tuple[Any, ...]:
    with db.connect() as conn:
        campaign = conn.execute(
            text(
                "SELECT status, status_reason, finished_at, updated_at FROM campaigns WHERE id = :c"
            ),
            {"c": campaign_id},
        ).one()
        n = conn.execute(text("SELECT count(*) FROM contact_events")).scalar_one()
        m = conn.execute(text("SELECT count(*) FROM campaign_events")).scalar_one()
    rows = [tuple(sorted(r.items())) for r in contact_rows(db, campaign_id)]
    return tuple(campaign), n, m, rows


@pytest.mark.parametrize("status", ["completed", "paused", "running"])
def test_nothing_matching_answers_an_empty_report_and_changes_nothing(
    api: TestClient, db: Engine, status: str
) -> None:
    campaign_id = set_up(db, api, status=status)
    flags = sync_flags()
    if status == "paused":
        flags.set_paused(campaign_id)
    before = snapshot(db, campaign_id)

    only_refused = api.post(f"/campaigns/{campaign_id}/retry", json={"error_codes": [131026]})
    nothing = api.post(f"/campaigns/{campaign_id}/retry", json={"error_codes": [470]})

    assert only_refused.status_code == nothing.status_code == 200
    assert only_refused.json()["skipped"]["unavailable"] == 1
    answer = nothing.json()
    assert answer["queued"] == {"error": 0, "sending_failed": 0} and answer["total"] == 0
    assert set(answer["skipped"].values()) == {0} and answer["warning"] is None
    assert answer["campaign"]["status"] == status
    assert snapshot(db, campaign_id) == before
    assert flags.is_paused(campaign_id) == (status == "paused")


def test_the_campaign_runs_again_and_its_pause_flag_comes_down(api: TestClient, db: Engine) -> None:
    flags = sync_flags()
    paused = set_up(db, api, status="running")
    assert api.post(f"/campaigns/{paused}/pause").status_code == 200
    assert flags.is_paused(paused)
    answer = api.post(f"/campaigns/{paused}/retry").json()
    assert (answer["campaign"]["status"], answer["campaign"]["status_reason"]) == ("running", None)
    assert not flags.is_paused(paused)
    assert events_of(db, paused)[-1] == (
        "paused",
        "running",
        "retry: 4 queued (error 2, sending_failed 2)",
    )

    completed = set_up(db, api, base=100)
    flags.set_paused(completed)  # a campaign paused, then completed, keeps its flag
    answer = api.post(f"/campaigns/{completed}/retry", json={"states": ["error"]}).json()
    assert answer["campaign"]["status"] == "running" and not flags.is_paused(completed)
    assert events_of(db, completed)[-1][:2] == ("completed", "running")

    running = set_up(db, api, status="running", base=200)
    answer = api.post(f"/campaigns/{running}/retry", json={"states": ["sending_failed"]}).json()
    assert answer["campaign"]["status"] == "running" and answer["total"] == 2
    assert events_of(db, running)[-1] == (
        "running",
        "running",
        "retry: 2 queued (error 0, sending_failed 2)",
    )


LATER = {"at": "2099-12-01T09:00:00Z"}


@pytest.mark.parametrize(
    ("status", "steps"),
    [
        ("draft", []),
        ("scheduled", [("start", LATER)]),
        ("cancelled", [("cancel", None)]),
        ("cancelled", [("start", None), ("cancel", None)]),
    ],
)
def test_a_campaign_that_has_not_run_or_was_cancelled_is_refused(
    api: TestClient, db: Engine, status: str, steps: list[tuple[str, dict[str, str] | None]]
) -> None:
    campaign_id = campaign_with_contacts(db, [phone(1), phone(2)])
    for step, body in steps:
        assert api.post(f"/campaigns/{campaign_id}/{step}", json=body).status_code == 200
    with db.begin() as conn:  # failed contacts would be there to take, if it were legal
        conn.execute(
            text("UPDATE contacts SET state = 'error' WHERE campaign_id = :c"), {"c": campaign_id}
        )
    before = snapshot(db, campaign_id)

    response = api.post(f"/campaigns/{campaign_id}/retry")

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "retry_not_allowed"
    assert f"cannot retry a {status} campaign" in response.json()["message"]
    assert snapshot(db, campaign_id) == before


def test_an_unknown_campaign_is_404(api: TestClient, db: Engine) -> None:
    response = api.post("/campaigns/987654321/retry", json={})
    assert response.status_code == 404
    assert response.json() == {
        "code": "campaign_not_found",
        "message": "campaign 987654321 not found",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"states": ["delivered"]},
        {"states": ["retry_scheduled"]},
        {"states": "error"},
        {"reason_codes": ["bogus"]},
        {"error_codes": ["131049"]},
        {"error_codes": [True]},
        {"error_codes": [-1]},
        {"error_codes": [2**31]},
        {"include_unknown": "maybe"},
        {"state": ["error"]},  # a misspelt field is no silent "everything"
        {"error_codes": list(range(101))},
    ],
)
def test_bad_filters_are_422_and_change_nothing(
    api: TestClient, db: Engine, body: dict[str, Any]
) -> None:
    campaign_id = set_up(db, api)
    before = snapshot(db, campaign_id)
    response = api.post(f"/campaigns/{campaign_id}/retry", json=body)
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"code", "message"} and response.json()["message"]
    assert snapshot(db, campaign_id) == before


def test_a_retry_that_queues_wakes_dispatch(
    api: TestClient, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import dispatch as dispatch_task

    woken: list[str] = []
    monkeypatch.setattr(dispatch_task.tick, "apply_async", lambda *a, **k: woken.append("tick"))
    campaign_id = set_up(db, api)
    woken.clear()
    api.post(f"/campaigns/{campaign_id}/retry", json={"error_codes": [470]})
    assert woken == []  # nothing queued, nothing to wake
    api.post(f"/campaigns/{campaign_id}/retry")
    assert woken == ["tick"]
