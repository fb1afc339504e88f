"""How a batch passes the gate and the ledger in groups (campaigns.services.dispatch.send),
without I/O."""

from __future__ import annotations

from tests.unit.dispatch_fakes import AcceptAll, RecordingGate, StartAll, contacts, plan, send


def test_groups_are_about_50_ms_of_sending() -> None:
    gate, transport, ledger = RecordingGate(), AcceptAll(), StartAll()
    send(plan(1000.0), contacts(120), gate, transport, ledger=ledger)
    assert gate.groups == [50, 50, 20]
    assert len(transport.sent) == 120
    assert ledger.started == list(range(120))  # every one started before it was sent


def test_a_group_is_never_larger_than_the_concurrency_limit() -> None:
    # 4,000 msg/s makes groups of 200: with 20 sends in flight at most, a group of 200 would
    # wait forever for slots it can never get (the capacity benchmark hung on this).
    gate, transport = RecordingGate(), AcceptAll()
    attempts, _ = send(plan(4000.0), contacts(50), gate, transport, concurrency=20)
    assert gate.groups == [20, 20, 10]
    assert sorted(transport.sent) == sorted(c.phone_e164 for c in contacts(50))
    assert all(a.result is not None and a.result.wamid for a in attempts)


def test_nothing_the_ledger_did_not_start_is_sent() -> None:
    """The start statement refused the group (the campaign was paused in Postgres, or the
    lease ran out): nothing goes out, everything goes back unsent, the batch stops."""
    gate, transport = RecordingGate(), AcceptAll()
    attempts, stopped = send(
        plan(1000.0), contacts(120), gate, transport, ledger=StartAll(refuse=True)
    )
    assert transport.sent == [] and stopped
    assert gate.groups == [50]  # the next group is never opened
    assert all(a.result is None for a in attempts)
