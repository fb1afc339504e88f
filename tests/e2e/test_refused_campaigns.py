"""End to end: a campaign whose every send is refused for a reason that is not the
contact's stops after a bounded number of requests (counted by the simulator), with the code
and its message in ``status_reason``; the rest of its list is left unsent for a resume."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine

from campaigns.runtime.stores import resolve
from campaigns.services import admin
from tests.fixtures.live import LiveStack
from tests.fixtures.processes import wait_for
from tests.integration.dispatch_support import (
    campaign_status,
    campaign_with_contacts,
    counts,
    phone,
    sync_flags,
)

TOTAL = 2000


@pytest.mark.parametrize(("code", "said"), [(131042, "131042"), (987654, "unknown error")])
def test_a_refused_campaign_pauses_after_a_bounded_number_of_requests(
    live: LiveStack, db: Engine, code: int, said: str
) -> None:
    """131042 (payment) is account-level: it pauses at the first answer. An unknown code
    pauses after UNKNOWN_ERROR_PAUSE_AFTER of them in a row. Either way at most
    DISPATCH_CONCURRENCY + UNKNOWN_ERROR_PAUSE_AFTER requests reach the platform."""
    from workers.dispatch import wake_dispatch

    numbers = [phone(i) for i in range(TOTAL)]
    live.sim.update_config(explicit={n.removeprefix("+"): code for n in numbers})
    campaign_id = campaign_with_contacts(db, numbers, rate=1000)
    live.start_worker()
    admin.start_campaign(db, sync_flags(), campaign_id)
    wake_dispatch()

    wait_for(
        lambda: campaign_status(db, campaign_id)[0] == "paused",
        timeout=60,
        what="the campaign to pause itself",
    )
    wait_for(
        lambda: counts(db, campaign_id).get("in_progress", 0) == 0,
        timeout=30,
        what="the claims in flight to be settled or given back",
    )
    time.sleep(1)  # nothing more may arrive after the pause
    requests = live.sim.stats(False)["requests_total"]
    settings = resolve().settings
    assert 1 <= requests <= settings.dispatch_concurrency + settings.unknown_error_pause_after
    reason = campaign_status(db, campaign_id)[1]
    assert reason is not None and said in reason, reason
    final = counts(db, campaign_id)
    assert final.get("error", 0) == requests  # one Error per refused request, nothing more
    assert final.get("initial", 0) == TOTAL - requests  # the rest waits for a resume
    print(f"code {code}: {requests} requests before the pause")  # for the report (-s)
