"""How a batch passes the gate and the ledger in groups (campaigns.services.dispatch.send),
without I/O."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from campaigns.domain.dispatch import SendJob, Starts
from campaigns.domain.outcomes import SendResult
from tests.unit.dispatch_fakes import AcceptAll, RecordingGate, StartAll, contacts, plan, send


def test_groups_are_about_50_ms_of_sending() -> None:
    gate, transport, ledger = RecordingGate(), AcceptAll(), StartAll()
    send(plan(1000.0), contacts(120), gate, transport, ledger=ledger)
    assert gate.groups == [50, 50, 20]
    assert len(transport.sent) == 120
    assert ledger.started == list(range(120))  # every one started before it was sent


def test_a_group_is_at_most_half_the_concurrency_limit() -> None:
    # 4,000 msg/s makes groups of 200: with 20 sends in flight at most, a group of 200 would
    # wait forever for slots it can never get (the capacity benchmark hung on this), and one
    # of 20 would wait for every send of the group before it.
    gate, transport = RecordingGate(), AcceptAll()
    attempts, _ = send(plan(4000.0), contacts(12), gate, transport, concurrency=20)
    assert gate.groups == [10, 2]
    assert sorted(transport.sent) == sorted(c.phone_e164 for c in contacts(12))
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


class SlowStart(StartAll):
    """A start statement that takes a moment, as a commit does: answers arrive meanwhile."""

    async def start(self, attempts: Sequence[tuple[int, uuid.UUID]]) -> Starts:
        await asyncio.sleep(0.01)
        return await super().start(attempts)


class RefusesPeople(StartAll):
    """A start statement in which the registry refuses some contacts (Sending failed there)."""

    def __init__(self, refused: dict[int, str]) -> None:
        super().__init__()
        self.refused = refused

    async def start(self, attempts: Sequence[tuple[int, uuid.UUID]]) -> Starts:
        kept = [(i, a) for i, a in attempts if i not in self.refused]
        started = await super().start(kept)
        refused = {i: code for i, _ in attempts if (code := self.refused.get(i))}
        return Starts(started.started, refused)


def test_contacts_the_registry_refuses_at_start_are_never_sent_and_the_batch_goes_on() -> None:
    gate, transport = RecordingGate(), AcceptAll()
    ledger = RefusesPeople({3: "opted_out", 60: "blocked"})
    attempts, stopped = send(plan(1000.0), contacts(120), gate, transport, ledger=ledger)
    assert not stopped and gate.groups == [50, 50, 20]
    assert len(transport.sent) == 118
    by_id = {a.contact.id: a for a in attempts}
    assert (by_id[3].suppressed, by_id[60].suppressed) == ("opted_out", "blocked")
    assert by_id[3].result is None and by_id[60].result is None
    assert all(a.suppressed is None and a.result for i, a in by_id.items() if i not in (3, 60))


class MissingTemplate(AcceptAll):
    async def send(self, job: SendJob) -> SendResult:
        self.sent.append(job.to_e164)
        return SendResult(http_status=404, error_code=132001, error_title="Template missing")


def test_every_claimed_contact_is_accounted_for_when_an_answer_stops_the_campaign() -> None:
    """The first answer pauses the campaign: what was not sent yet (the rest of the group
    loop, a group that had not opened) goes back unsent; nothing is left In progress."""
    transport = MissingTemplate()
    claimed = contacts(30)
    attempts, stopped = send(plan(20.0), claimed, RecordingGate(), transport, ledger=SlowStart())
    assert stopped
    assert 1 <= len(transport.sent) < 30
    assert [a.contact.id for a in attempts] == [c.id for c in claimed]  # one each
    answered = [a for a in attempts if a.result is not None]
    assert len(answered) == len(transport.sent)
    assert all(a.decision is not None and a.decision.pause_campaign for a in answered)
