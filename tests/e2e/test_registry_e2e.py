"""The contact registry end to end: real worker processes, the beat tick, the HTTP service
and the simulator (its webhooks signed and posted to the API).

- A STOP while a campaign runs at 1 msg/s is never followed by a send to that person: the
  batch claimed all of them ahead, and the check as each gate group opens stops it.
- A 131026 in one campaign (as the send's answer, or by a failed webhook later) refuses
  the number in the next one at upload.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import Engine

from tests.conftest import API_TOKEN
from tests.e2e.test_campaign_e2e import command, settled
from tests.fixtures.live import LiveStack
from tests.fixtures.processes import start_worker, wait_for
from tests.integration.dispatch_support import campaign_with_contacts, contact_rows, phone

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def person(live: LiveStack, number: str) -> dict[str, Any] | None:
    response = httpx.get(f"{live.api_url}/contacts/{number.replace('+', '%2B')}", headers=AUTH)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(live: LiveStack, upload_id: int) -> dict[str, Any] | None:
    upload: dict[str, Any] = httpx.get(f"{live.api_url}/uploads/{upload_id}", headers=AUTH).json()
    return upload if upload["status"] == "completed" else None


def test_a_stop_during_a_slow_campaign_stops_that_person(live: LiveStack, db: Engine) -> None:
    numbers = [phone(i) for i in range(6)]
    stopper = numbers[-1]  # its turn comes last, ~5 s after the start
    campaign_id = campaign_with_contacts(db, numbers, rate=1)
    live.start_worker()
    command(live, campaign_id, "start")
    wait_for(lambda: live.sim.stats(False)["accepted_total"] >= 1, timeout=30, what="a send")

    replied = httpx.post(
        f"{live.sim.base_url}/_sim/inbound",
        json={"from": stopper[1:], "text": "STOP", "phone_number_id": "100200300"},
    )
    assert replied.status_code == 200, replied.text
    wait_for(
        lambda: (p := person(live, stopper)) is not None and p["opted_out"],
        timeout=15,
        what="the STOP to reach the registry",
    )
    stopped_at = time.monotonic()
    sent_before = set(live.sim.stats()["accepted_by_recipient"])
    assert stopper[1:] not in sent_before, "the STOP came too late for this test's timing"

    wait_for(lambda: settled(db, campaign_id), timeout=60, what="the campaign to settle")
    stats = live.sim.stats()
    assert stopper[1:] not in stats["accepted_by_recipient"]
    assert stats["accepted_total"] == len(numbers) - 1 and stats["duplicate_count"] == 0
    row = next(r for r in contact_rows(db, campaign_id) if r["phone_e164"] == stopper)
    assert (row["state"], row["reason_code"]) == ("sending_failed", "opted_out")
    assert time.monotonic() - stopped_at < 60
    shown = person(live, stopper)
    assert shown is not None and shown["opt_out_source"] == "whatsapp reply"
    assert shown["campaigns"][0]["reason_code"] == "opted_out"


def test_a_131026_refuses_the_number_in_the_next_campaign(live: LiveStack, db: Engine) -> None:
    at_once, later, fine = phone(1), phone(2), phone(3)
    live.sim.update_config(explicit={at_once[1:]: 131026, later[1:]: "undeliverable_later"})
    first = campaign_with_contacts(db, [at_once, later, fine], rate=50)
    live.start_worker()
    command(live, first, "start")
    wait_for(
        lambda: all(
            (p := person(live, n)) is not None and p["status"] == "UNAVAILABLE"
            for n in (at_once, later)
        ),
        timeout=60,
        what="both numbers to be UNAVAILABLE",
    )
    shown = person(live, at_once)
    assert shown is not None and shown["unavailable_code"] == 131026

    created = httpx.post(
        f"{live.api_url}/campaigns",
        headers=AUTH,
        json={"name": "next", "template": "bf_offer", "region": "DE"},
    )
    second = created.json()["id"]
    upload = httpx.post(
        f"{live.api_url}/campaigns/{second}/uploads",
        headers={**AUTH, "Content-Type": "text/csv"},
        content=f"phone\n{at_once}\n{later}\n{fine}\n".encode(),
    )
    assert upload.status_code == 202, upload.text
    upload_id = upload.json()["id"]
    ingest = start_worker(live.env, live.log_dir, name="worker-ingest", queues="ingest")
    try:
        report = wait_for(lambda: finished(live, upload_id), timeout=60, what="the upload")
    finally:
        ingest.stop()
    assert report["reasons"] == {"unavailable": 2} and report["valid"] == 1

    # DELETE clears UNAVAILABLE: the number may be uploaded again.
    assert httpx.delete(f"{live.api_url}/contacts/{at_once}", headers=AUTH).status_code == 200
    assert person(live, at_once) is None


def test_a_check_contacts_campaign_checks_before_its_first_send(
    live: LiveStack, db: Engine
) -> None:
    live.env["WHATSAPP_CONTACTS_URL"] = live.sim.base_url  # the worker runs the check
    numbers = [phone(i) for i in range(5)]
    absent = numbers[2]
    live.sim.update_config(explicit={absent[1:]: 131026})
    campaign_id = campaign_with_contacts(db, numbers, rate=50, check_contacts=True)
    live.start_worker()
    command(live, campaign_id, "start")
    wait_for(lambda: settled(db, campaign_id), timeout=60, what="the campaign to settle")

    stats = live.sim.stats()
    assert stats["contacts_checked_total"] == len(numbers)
    assert absent[1:] not in stats["accepted_by_recipient"]
    assert stats["requests_total"] == len(numbers) - 1  # no send was even tried for it
    rows = {r["phone_e164"]: r for r in contact_rows(db, campaign_id)}
    assert (rows[absent]["state"], rows[absent]["reason_code"]) == (
        "sending_failed",
        "not_on_whatsapp",
    )
    body = httpx.get(f"{live.api_url}/campaigns/{campaign_id}", headers=AUTH).json()
    assert body["contacts_checked_at"] is not None
    shown = person(live, absent)
    assert shown is not None and shown["check_status"] == "invalid" and shown["status"] is None
