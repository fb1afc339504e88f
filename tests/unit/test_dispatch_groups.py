"""How a batch passes the gate in groups (campaigns.services.dispatch.send.send_claimed), without I/O."""

from __future__ import annotations

import asyncio

from campaigns.services.dispatch.send import send_claimed
from tests.unit.dispatch_fakes import AcceptAll, RecordingGate, contacts, plan


def test_groups_are_about_50_ms_of_sending() -> None:
    gate, transport = RecordingGate(), AcceptAll()
    asyncio.run(send_claimed(plan(1000.0), contacts(120), gate, transport))
    assert gate.groups == [50, 50, 20]
    assert len(transport.sent) == 120


def test_a_group_is_never_larger_than_the_concurrency_limit() -> None:
    # 4,000 msg/s makes groups of 200: with 20 sends in flight at most, a group of 200 would
    # wait forever for slots it can never get (the capacity benchmark hung on this).
    gate, transport = RecordingGate(), AcceptAll()
    attempts = asyncio.run(
        asyncio.wait_for(
            send_claimed(plan(4000.0), contacts(50), gate, transport, concurrency=20),
            timeout=10,
        )
    )
    assert gate.groups == [20, 20, 10]
    assert sorted(transport.sent) == sorted(c.phone_e164 for c in contacts(50))
    assert all(a.result is not None and a.result.wamid for a in attempts)
