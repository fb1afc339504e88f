"""End to end: real worker processes, the beat tick, the HTTP service and the simulator."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import Engine, text

from campaigns.dev.simulator.outcomes import OutcomeRules
from tests.conftest import API_TOKEN
from tests.fixtures.live import LiveStack
from tests.fixtures.processes import wait_for
from tests.integration.dispatch_support import campaign_with_contacts, phone, states

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def command(live: LiveStack, campaign_id: int, name: str) -> dict[str, Any]:
    response = httpx.post(f"{live.api_url}/campaigns/{campaign_id}/{name}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def campaign(live: LiveStack, campaign_id: int) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{live.api_url}/campaigns/{campaign_id}", headers=AUTH).json()
    return body


def settled(engine: Engine, campaign_id: int) -> bool:
    """Completed, and every accepted message has had its webhooks applied."""
    with engine.connect() as conn:
        status = conn.execute(
            text("SELECT status FROM campaigns WHERE id = :c"), {"c": campaign_id}
        ).scalar_one()
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM contacts WHERE campaign_id = :c "
                "AND state IN ('initial', 'in_progress', 'retry_scheduled', 'sent')"
            ),
            {"c": campaign_id},
        ).scalar_one()
    return bool(status == "completed" and waiting == 0)


def accepted_once_each(live: LiveStack) -> dict[str, Any]:
    stats = live.sim.stats()
    assert stats["duplicate_count"] == 0, stats["duplicates"][:10]
    return stats


def test_campaign_completes_with_the_right_counts(live: LiveStack, db: Engine) -> None:
    # Last two digits pick the outcome: 00-02 not on WhatsApp, 03-05 delivery fails later,
    # 06-07 a 500 once then success, 08 a timeout once (accepted: its webhook settles it).
    live.sim.update_config(
        undeliverable_share=0.03,
        delivery_fail_share=0.03,
        server_error_share=0.02,
        timeout_share=0.01,
    )
    numbers = [phone(i) for i in range(400)]
    campaign_id = campaign_with_contacts(db, numbers, rate=400)
    live.start_worker()
    command(live, campaign_id, "start")

    rules = OutcomeRules(read_share=0.7)
    expected: dict[str, str] = {}
    for number in numbers:
        last2 = int(number[-2:])
        if last2 <= 2:
            expected[number] = "sending_failed"
        elif last2 <= 5:
            expected[number] = "delivery_failed"
        else:
            read = int(number[-4:-2]) < round(rules.read_share * 100)
            expected[number] = "read" if read else "delivered"

    # Read receipts may still be on their way when nothing is left to send: wait for them.
    wait_for(lambda: settled(db, campaign_id), timeout=90, what="the campaign to settle")
    wait_for(lambda: states(db, campaign_id) == expected, timeout=30, what="every final state")
    stats = accepted_once_each(live)
    accepted = sum(1 for n in numbers if int(n[-2:]) > 2)
    assert stats["accepted_total"] == accepted
    body = campaign(live, campaign_id)
    assert body["status"] == "completed" and body["counts"]["in_progress"] == 0


def test_pause_mid_flight_then_resume_sends_each_once(live: LiveStack, db: Engine) -> None:
    numbers = [phone(i) for i in range(600)]
    campaign_id = campaign_with_contacts(db, numbers, rate=100)
    live.start_worker()
    command(live, campaign_id, "start")
    wait_for(lambda: live.sim.stats(False)["accepted_total"] >= 100, timeout=30, what="sends")

    command(live, campaign_id, "pause")
    at_pause = live.sim.stats(False)["accepted_total"]
    wait_for(
        lambda: campaign(live, campaign_id)["counts"]["in_progress"] == 0,
        timeout=15,
        what="claims to be released",
    )
    later = live.sim.stats(False)["accepted_total"]
    # At 100 msg/s a pause that took a second to bite would let ~100 more through.
    assert later - at_pause <= 20, (at_pause, later)
    paused = campaign(live, campaign_id)
    assert paused["status"] == "paused" and paused["counts"]["initial"] > 0

    command(live, campaign_id, "resume")
    wait_for(lambda: settled(db, campaign_id), timeout=90, what="the campaign to settle")
    stats = accepted_once_each(live)
    assert stats["accepted_total"] == 600
    assert set(states(db, campaign_id).values()) <= {"delivered", "read"}


def test_cancel_mid_flight(live: LiveStack, db: Engine) -> None:
    numbers = [phone(i) for i in range(600)]
    campaign_id = campaign_with_contacts(db, numbers, rate=100)
    live.start_worker()
    command(live, campaign_id, "start")
    wait_for(lambda: live.sim.stats(False)["accepted_total"] >= 50, timeout=30, what="sends")

    out = command(live, campaign_id, "cancel")
    assert out["status"] == "cancelled"
    wait_for(
        lambda: campaign(live, campaign_id)["counts"]["in_progress"] == 0,
        timeout=15,
        what="claims to be settled",
    )
    counts = campaign(live, campaign_id)["counts"]
    accepted = accepted_once_each(live)["accepted_total"]
    assert counts["canceled_by_admin"] > 0
    assert counts["canceled_by_admin"] + accepted == 600
    assert counts["initial"] == 0 and counts["retry_scheduled"] == 0


def test_a_server_error_for_a_message_the_platform_took_is_not_sent_twice(
    live: LiveStack, db: Engine
) -> None:
    # Every fifth number is taken by the platform but answered with a 500 (an overloaded edge).
    # Its status webhooks come 3-5 s later. A retry sooner than that messages the person a
    # second time; the retry waits SETTLE_FLOOR_S (30 s), so the webhook settles it first.
    numbers = [phone(i) for i in range(50)]
    taken = {n for i, n in enumerate(numbers) if i % 5 == 0}
    live.sim.update_config(
        explicit={n.removeprefix("+"): "accepted_error" for n in taken},
        webhook_delay_min_s=3.0,
        webhook_delay_max_s=5.0,
    )
    campaign_id = campaign_with_contacts(db, numbers, rate=100)
    live.start_worker()
    command(live, campaign_id, "start")

    wait_for(lambda: settled(db, campaign_id), timeout=60, what="the campaign to settle")
    stats = accepted_once_each(live)
    assert stats["accepted_total"] == len(numbers)
    assert stats["rejected_by_code"] == {"131000": len(taken)}  # each was answered with a 500
    final = states(db, campaign_id)
    assert {final[n] for n in taken} <= {"delivered", "read"}
    with db.connect() as conn:
        attempts = conn.execute(
            text("SELECT max(attempts) FROM contacts WHERE campaign_id = :c"), {"c": campaign_id}
        ).scalar_one()
    assert attempts == 1
