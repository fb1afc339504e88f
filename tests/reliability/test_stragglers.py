"""Stragglers: 1% of requests hang until the client's timeout. Each holds only its own
contact: the campaign keeps its rate (measured from the send ledger's start marks over the
middle 90% of its sends), against the same campaign without stragglers in the same run."""

from __future__ import annotations

from sqlalchemy import Engine, text

from campaigns.services import admin
from tests.fixtures.live import LiveStack
from tests.fixtures.processes import wait_for
from tests.integration.dispatch_support import (
    campaign_status,
    campaign_with_contacts,
    phone,
    sync_flags,
)

TOTAL = 1500
RATE = 150.0


def send_rate(db: Engine, campaign_id: int) -> float:
    """Sends per second over the middle 90% of the campaign's start marks."""
    with db.connect() as conn:
        times = [
            float(t)
            for t in conn.execute(
                text(
                    "SELECT extract(epoch FROM send_started_at) FROM contacts"
                    " WHERE campaign_id = :c AND send_started_at IS NOT NULL"
                    " ORDER BY send_started_at"
                ),
                {"c": campaign_id},
            ).scalars()
        ]
    assert len(times) == TOTAL
    lo = len(times) // 20
    hi = len(times) - 1 - lo
    return (hi - lo) / (times[hi] - times[lo])


def run(live: LiveStack, db: Engine, first: int) -> float:
    from workers.dispatch import wake_dispatch

    numbers = [phone(first + i) for i in range(TOTAL)]
    campaign_id = campaign_with_contacts(db, numbers, rate=RATE)
    admin.start_campaign(db, sync_flags(), campaign_id)
    wake_dispatch()
    wait_for(
        lambda: campaign_status(db, campaign_id)[0] == "completed",
        timeout=TOTAL / RATE * 3 + 30,
        what="the campaign to complete",
    )
    return send_rate(db, campaign_id)


def test_hanging_requests_do_not_slow_the_campaign(live: LiveStack, db: Engine) -> None:
    live.start_worker()
    without = run(live, db, 0)
    # Numbers ending in 00 hang past WHATSAPP_TIMEOUT_S (1.5 s here): accepted, answer lost,
    # settled by their webhooks.
    live.sim.update_config(timeout_share=0.01, timeout_hang_s=3.0)
    with_ = run(live, db, 10_000)
    print(f"stragglers: rate with {with_:.1f}/s, without {without:.1f}/s")  # for the report
    assert with_ >= 0.9 * RATE, with_
    assert with_ / without >= 0.9, (with_, without)
    stats = live.sim.stats()
    assert stats["duplicate_count"] == 0
