"""Retrying only the failed, end to end: real worker processes, the beat tick, the HTTP
service and the simulator. A campaign's sends fail for some recipients (the simulator's
explicit per-recipient codes); once the failures are cured, ``retry`` sends each failed
contact exactly once, and never to a person who opted out (by a 131050 answer or an
operator) or who is not on WhatsApp."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import Engine

from tests.conftest import API_TOKEN
from tests.e2e.test_campaign_e2e import command, settled
from tests.fixtures.live import LiveStack
from tests.fixtures.processes import wait_for
from tests.integration.dispatch_support import campaign_with_contacts, contact_rows, phone

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

# Every other number fails, each with a code of the platform (the rest are accepted):
CURABLE = {
    1: 131049,  # sending_failed: the marketing cap per user
    3: 131049,
    5: 130472,  # sending_failed: a marketing experiment
    7: 131047,  # error: outside the 24 h window
    9: 131047,
    11: 131000,  # error: a server error, retries exhausted (max_attempts 1)
}
STOPPED, ABSENT, OPTED_OUT_LATER = 13, 15, 17  # 131050, 131026, 131049 + an operator opt-out
COUNT = 20


def retry(live: LiveStack, campaign_id: int, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{live.api_url}/campaigns/{campaign_id}/retry", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_retry_sends_each_failed_contact_once_and_never_an_opted_out_person(
    live: LiveStack, db: Engine
) -> None:
    numbers = [phone(i) for i in range(COUNT)]
    digits = [n[1:] for n in numbers]
    failing = {
        **{digits[i]: code for i, code in CURABLE.items()},
        digits[STOPPED]: 131050,
        digits[ABSENT]: 131026,
        digits[OPTED_OUT_LATER]: 131049,
    }
    live.sim.update_config(explicit=failing)
    campaign_id = campaign_with_contacts(db, numbers, rate=50, max_attempts=1)
    live.start_worker()
    command(live, campaign_id, "start")
    wait_for(lambda: settled(db, campaign_id), timeout=90, what="the campaign to settle")

    first = live.sim.stats()["accepted_by_recipient"]
    assert set(first) == set(digits) - set(failing) and set(first.values()) == {1}
    failed = {r["phone_e164"][1:]: r["state"] for r in contact_rows(db, campaign_id)}
    assert {failed[d] for d in failing} == {"error", "sending_failed"}
    number = numbers[OPTED_OUT_LATER].replace("+", "%2B")
    opted = httpx.post(f"{live.api_url}/contacts/{number}/opt-out", headers=AUTH, json={})
    assert opted.status_code == 200, opted.text

    # The failures are cured; the person who said stop and the number without WhatsApp stay.
    live.sim.update_config(explicit={digits[STOPPED]: 131050, digits[ABSENT]: 131026})
    answer = retry(live, campaign_id, {})

    assert answer["queued"] == {"error": 3, "sending_failed": 3} and answer["total"] == 6
    assert answer["skipped"] == {
        "opted_out": 2,
        "unavailable": 1,
        "blocked": 0,
        "outcome_unknown": 0,
    }
    assert answer["warning"] is None and answer["campaign"]["status"] == "running"
    wait_for(lambda: settled(db, campaign_id), timeout=90, what="the retried sends to settle")

    stats = live.sim.stats()
    accepted = stats["accepted_by_recipient"]
    retried = {digits[i] for i in CURABLE}
    assert stats["duplicate_count"] == 0, stats["duplicates"]
    assert set(accepted) == set(first) | retried and set(accepted.values()) == {1}
    for refused in (STOPPED, ABSENT, OPTED_OUT_LATER):
        assert digits[refused] not in accepted
    rows = {r["phone_e164"][1:]: r for r in contact_rows(db, campaign_id)}
    for d in retried:  # a new round: its one attempt was accepted
        assert rows[d]["state"] in ("delivered", "read") and rows[d]["attempts"] == 1, rows[d]
    assert rows[digits[STOPPED]]["state"] == rows[digits[ABSENT]]["state"] == "sending_failed"

    # Nothing is left to retry: an empty report, and the campaign stays completed.
    again = retry(live, campaign_id, {"include_unknown": True})
    assert again["total"] == 0 and again["skipped"]["opted_out"] == 2
    assert again["campaign"]["status"] == "completed"
    assert live.sim.stats()["accepted_total"] == stats["accepted_total"]
