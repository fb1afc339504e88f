"""Dispatch on real Postgres and Redis against the simulator: claim, send, record, recover.

Batches run through ``run_chain``, the path production takes; a chain with a budget of one
batch (``max_s=0``) claims, sends and records a single batch."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, text

from campaigns.dev.simulator.outcomes import OutcomeKind
from campaigns.dev.simulator.runner import RunningSimulator
from campaigns.domain import dispatch as rules
from campaigns.domain.dispatch import RecordedOutcome, Starts
from campaigns.domain.outcomes import SendResult
from campaigns.domain.states import CampaignStatus, ContactState, IllegalTransition
from campaigns.services import admin
from campaigns.services.dispatch.batch import BatchReport, claim_batch
from campaigns.services.dispatch.chain import run_chain
from campaigns.services.dispatch.plan import load_plan
from campaigns.services.dispatch.ports import MessageTransport
from campaigns.services.dispatch.recovery import recover_expired_leases
from campaigns.services.dispatch.tick import running_due, start_due_scheduled
from campaigns.storage import dispatch as dispatch_db
from tests.integration.dispatch_support import (
    SENDER,
    SendPorts,
    campaign_status,
    campaign_with_contacts,
    chain,
    contact_rows,
    phone,
    send_claimed,
    send_ports,
    start_committed,
    states,
    sync_flags,
)

C = ContactState


@pytest.fixture
def ports(sim: RunningSimulator) -> Iterator[SendPorts]:
    with send_ports(sim, timeout_s=1.0) as p:
        yield p


def run_until_idle(engine: Engine, campaign_id: int, ports: SendPorts) -> list[BatchReport]:
    """One batch at a time until nothing more is due now; each batch's report."""
    reports: list[BatchReport] = []
    for _ in range(100):
        if not chain(engine, campaign_id, ports, max_s=0, reports=reports):
            return reports
    raise AssertionError("dispatch did not go idle")


def test_campaign_sends_every_contact_once_and_completes(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    numbers = [phone(i) for i in range(450)]
    campaign_id = campaign_with_contacts(db, numbers, rate=1000)
    admin.start_campaign(db, sync_flags(), campaign_id)

    reports = run_until_idle(db, campaign_id, ports)

    assert sum(r.claimed for r in reports) == 450
    assert set(states(db, campaign_id).values()) == {"sent"}
    stats = sim.stats()
    assert stats["accepted_total"] == 450
    assert stats["duplicate_count"] == 0
    assert campaign_status(db, campaign_id)[0] == "completed"
    rows = contact_rows(db, campaign_id)
    assert all(r["wamid"] and r["sent_at"] and r["attempts"] == 1 for r in rows)
    assert all(r["lease_expires_at"] is None for r in rows)
    with db.connect() as conn:
        events = conn.execute(
            text(
                "SELECT from_state, to_state, count(*) FROM contact_events "
                "WHERE campaign_id = :c GROUP BY 1, 2 ORDER BY 1"
            ),
            {"c": campaign_id},
        ).all()
    assert {(f, t): n for f, t, n in events} == {
        ("initial", "in_progress"): 450,
        ("in_progress", "sent"): 450,
    }


def test_each_error_class_lands_in_its_state(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    codes = {1: 131026, 2: 131050, 3: 131000, 4: 100, 5: 130429}
    explicit: dict[str, OutcomeKind | int] = {
        phone(n).removeprefix("+"): code for n, code in codes.items()
    }
    explicit[phone(6).removeprefix("+")] = OutcomeKind.TIMEOUT
    sim.update_config(explicit=explicit)
    numbers = [phone(i) for i in range(7)]
    campaign_id = campaign_with_contacts(db, numbers)
    admin.start_campaign(db, sync_flags(), campaign_id)

    run_until_idle(db, campaign_id, ports)

    by_phone = {r["phone_e164"]: r for r in contact_rows(db, campaign_id)}
    assert by_phone[phone(0)]["state"] == "sent"
    assert by_phone[phone(1)]["state"] == "sending_failed"
    assert by_phone[phone(1)]["error_code"] == 131026
    assert by_phone[phone(2)]["state"] == "sending_failed"  # 131050 stopped marketing
    retry = by_phone[phone(3)]
    assert retry["state"] == "retry_scheduled" and retry["attempts"] == 1
    assert retry["next_attempt_at"] > datetime.now(UTC)
    assert by_phone[phone(4)]["state"] == "error" and by_phone[phone(4)]["error_code"] == 100
    assert by_phone[phone(5)]["state"] == "retry_scheduled"  # throughput: back soon
    unknown = by_phone[phone(6)]
    # A timeout after the request left: never re-sent, it waits for its webhook.
    assert unknown["state"] == "in_progress" and unknown["lease_expires_at"] is not None
    with db.connect() as conn:
        opted = conn.execute(text("SELECT phone_e164 FROM people WHERE opted_out")).scalars().all()
    assert opted == [phone(2)]
    assert campaign_status(db, campaign_id)[0] == "running"  # retries are still pending


def test_retries_exhausted_become_error(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    sim.update_config(explicit={phone(1).removeprefix("+"): 131000})
    campaign_id = campaign_with_contacts(db, [phone(1)], max_attempts=2)
    admin.start_campaign(db, sync_flags(), campaign_id)
    run_until_idle(db, campaign_id, ports)
    assert states(db, campaign_id) == {phone(1): "retry_scheduled"}
    with db.begin() as conn:  # the backoff has passed
        conn.execute(
            text("UPDATE contacts SET next_attempt_at = now() WHERE campaign_id = :c"),
            {"c": campaign_id},
        )
    run_until_idle(db, campaign_id, ports)
    (row,) = contact_rows(db, campaign_id)
    assert row["state"] == "error" and row["attempts"] == 2
    assert row["reason"].startswith("retries exhausted")
    assert campaign_status(db, campaign_id)[0] == "completed"
    assert sim.stats()["requests_total"] == 2


def test_template_error_pauses_the_campaign_and_stops_the_batch(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    sim.update_config(missing_templates=["bf_offer"])
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(60)], rate=20)
    admin.start_campaign(db, sync_flags(), campaign_id)

    reports: list[BatchReport] = []
    more = chain(db, campaign_id, ports, max_s=0, reports=reports)
    released = sum(r.outcomes["released"] for r in reports)

    status, reason = campaign_status(db, campaign_id)
    assert status == "paused"
    assert reason is not None and "132001" in reason
    assert any(r.paused_reason for r in reports) and not more
    # At 20 msg/s the first answers come back before most tokens: the flag stops the rest.
    counts = states(db, campaign_id)
    errors = sum(1 for s in counts.values() if s == "error")
    assert errors >= 1 and released >= 1
    assert errors + released == sum(r.claimed for r in reports)
    assert sum(1 for s in counts.values() if s == "initial") == 60 - errors, sorted(counts.values())
    assert sim.stats()["requests_total"] == errors
    assert sync_flags().is_paused(campaign_id)


def test_pause_releases_unsent_claims_and_cancel_cancels_them(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(30)])
    flags = sync_flags()
    admin.start_campaign(db, flags, campaign_id)
    plan = load_plan(db, campaign_id, SENDER)
    assert plan is not None
    claimed = claim_batch(db, plan, lease_margin_s=60)
    assert len(claimed) == 30

    admin.pause_campaign(db, flags, campaign_id)
    send_claimed(db, plan, claimed, ports)

    assert sim.stats()["requests_total"] == 0
    rows = contact_rows(db, campaign_id)
    assert {r["state"] for r in rows} == {"initial"}
    assert {r["attempts"] for r in rows} == {0}  # a released claim is not an attempt

    admin.resume_campaign(db, flags, campaign_id)
    plan = load_plan(db, campaign_id, SENDER)
    assert plan is not None
    claimed = claim_batch(db, plan, lease_margin_s=60)
    admin.cancel_campaign(db, flags, campaign_id)
    send_claimed(db, plan, claimed, ports)
    assert set(states(db, campaign_id).values()) == {"canceled_by_admin"}
    assert sim.stats()["requests_total"] == 0
    assert campaign_status(db, campaign_id)[0] == "cancelled"


def test_recording_is_guarded_by_the_attempt(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    campaign_id = campaign_with_contacts(db, [phone(1)])
    admin.start_campaign(db, sync_flags(), campaign_id)
    plan = load_plan(db, campaign_id, SENDER)
    assert plan is not None
    (claimed,) = claim_batch(db, plan, lease_margin_s=60)
    stale = RecordedOutcome(claimed.id, uuid.uuid4(), ContactState.ERROR, reason="stale")
    with db.begin() as conn:
        assert dispatch_db.record_outcomes(conn, [stale]) == (0, 0)
    # A status webhook moved the contact on before the worker's commit: the worker only adds
    # the wamid it lacks and never moves the state back.
    with db.begin() as conn:
        conn.execute(
            text("UPDATE contacts SET state = 'delivered' WHERE id = :i"), {"i": claimed.id}
        )
    sent = RecordedOutcome(
        claimed.id, claimed.attempt_id, ContactState.SENT, wamid="wamid.X", at=datetime.now(UTC)
    )
    with db.begin() as conn:
        assert dispatch_db.record_outcomes(conn, [sent]) == (0, 1)
    (row,) = contact_rows(db, campaign_id)
    assert row["state"] == "delivered" and row["wamid"] == "wamid.X"
    # A target the table does not allow from In progress is refused before any SQL runs.
    removed = RecordedOutcome(claimed.id, claimed.attempt_id, ContactState.REMOVED)
    with db.begin() as conn, pytest.raises(IllegalTransition):
        dispatch_db.record_outcomes(conn, [removed])


# Quotes, backslashes, a newline, non-ASCII and a character outside the BMP.
ODD_TEXT = 'Zu viele Anfragen \u2013 \u201eGrenze\u201c "quoted" \\ back\\slash\n\u2603 \U0001f600'


def record_edge_cases(
    db: Engine,
) -> tuple[list[RecordedOutcome], datetime, dict[int, str | None], dict[int, dict[str, Any]]]:
    """Five started contacts recorded in one batch (given in reverse order): sent (a time in
    another zone, to the microsecond), a retry without a delay, an error, a release with a
    due time, an unknown outcome with every optional value absent. Returns the outcomes, the
    recording transaction's now(), each contact's event detail and its row."""
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(5)])
    admin.start_campaign(db, sync_flags(), campaign_id)
    with db.begin() as conn:
        claimed = dispatch_db.claim_due(conn, campaign_id, limit=10, lease_s=60)
    assert start_committed(db, claimed).started == {c.id for c in claimed}
    at = datetime(2026, 3, 29, 3, 30, 0, 123457, tzinfo=ZoneInfo("Europe/Berlin"))
    s, r, e, x, u = ((c.id, c.attempt_id) for c in claimed)
    outcomes = [
        RecordedOutcome(
            *s, C.SENT, wamid="wamid.\u00e9\\1", wa_id="491", message_status="held", at=at
        ),
        RecordedOutcome(
            *r, C.RETRY_SCHEDULED, reason=ODD_TEXT, error_code=130429, error_detail=ODD_TEXT
        ),
        RecordedOutcome(*e, C.ERROR, reason="error: x", error_code=131000, retry_after_s=12.5),
        RecordedOutcome(
            *x,
            C.INITIAL,
            reason=ODD_TEXT,
            released=True,
            not_before=datetime(2030, 1, 2, 8, 0, 0, 999999, tzinfo=UTC),
        ),
        RecordedOutcome(*u, None),
    ]
    with db.begin() as conn:
        assert dispatch_db.record_outcomes(conn, outcomes[::-1]) == (5, 0)
        now = conn.execute(text("SELECT now()")).scalar_one()
        events = conn.execute(
            text("SELECT contact_id, detail FROM contact_events WHERE to_state <> 'in_progress'")
        ).all()
    rows = {r["id"]: r for r in contact_rows(db, campaign_id)}
    return outcomes, now, {int(i): d for i, d in events}, rows


def test_recording_stores_every_value_as_given(db: Engine) -> None:
    outcomes, now, events, rows = record_edge_cases(db)
    sent, retry, error, released, unknown = (rows[o.contact_id] for o in outcomes)
    assert (sent["state"], sent["wamid"], sent["wa_id"]) == ("sent", "wamid.\u00e9\\1", "491")
    assert sent["sent_at"] == outcomes[0].at and sent["message_status"] == "held"
    assert sent["lease_expires_at"] is None and sent["reason"] is None
    assert (retry["state"], retry["reason"], retry["error_detail"]) == (
        "retry_scheduled",
        ODD_TEXT,
        ODD_TEXT,
    )
    assert retry["error_code"] == 130429 and retry["next_attempt_at"] == now  # no delay: due now
    assert (error["state"], error["error_detail"], error["finished_at"]) == ("error", None, now)
    assert (released["state"], released["attempts"], released["reason"]) == ("initial", 0, None)
    assert released["next_attempt_at"] == outcomes[3].not_before
    assert released["send_started_at"] is None
    assert (unknown["state"], unknown["attempts"]) == ("in_progress", 1)
    assert unknown["lease_expires_at"] == now and unknown["send_started_at"] is not None
    assert unknown["wamid"] is None and unknown["error_code"] is None
    assert events == {
        sent["id"]: None,
        retry["id"]: ODD_TEXT,
        error["id"]: "error: x",
        released["id"]: f"released unsent: {ODD_TEXT}",
    }


def test_expired_leases_are_released_or_become_outcome_unknown(db: Engine) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(3)])
    admin.start_campaign(db, sync_flags(), campaign_id)
    with db.begin() as conn:
        claimed = dispatch_db.claim_due(conn, campaign_id, limit=10, lease_s=0)
    never, started_old, started_new = claimed
    with db.begin() as conn:  # the third lease expired only a moment ago
        conn.execute(
            text(
                "UPDATE contacts SET lease_expires_at = now() - interval '1 hour' "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": [never.id, started_old.id]},
        )
        conn.execute(
            text(
                "UPDATE contacts SET lease_expires_at = now() - interval '1 second' WHERE id = :i"
            ),
            {"i": started_new.id},
        )
    # Their leases ran out already: the ledger refuses to start them.
    assert start_committed(db, [started_old, started_new]) == Starts()
    with db.begin() as conn:  # two of them passed the start statement (marked by hand)
        conn.execute(
            text("UPDATE contacts SET send_started_at = now() WHERE id = ANY(:ids)"),
            {"ids": [started_old.id, started_new.id]},
        )
    report = recover_expired_leases(db, grace_s=600)
    assert (report.released, report.errored, report.waiting) == (1, 1, 1)
    by_id = {r["id"]: r for r in contact_rows(db, campaign_id)}
    assert by_id[never.id]["state"] == "initial" and by_id[never.id]["attempts"] == 0
    assert by_id[started_old.id]["state"] == "error"
    assert by_id[started_old.id]["reason"] == rules.OUTCOME_UNKNOWN
    assert by_id[started_new.id]["state"] == "in_progress"


def test_scheduled_start_runs_when_due(db: Engine) -> None:
    campaign_id = campaign_with_contacts(db, [phone(1)])
    at = datetime.now(UTC) + timedelta(hours=1)
    out = admin.start_campaign(db, sync_flags(), campaign_id, at=at)
    assert out.status is CampaignStatus.SCHEDULED and out.scheduled_at == at
    assert start_due_scheduled(db) == []
    with db.begin() as conn:
        conn.execute(text("UPDATE campaigns SET scheduled_at = now() - interval '1 second'"))
    assert start_due_scheduled(db) == [campaign_id]
    assert campaign_status(db, campaign_id)[0] == "running"
    assert [c for c, _, _ in running_due(db, SENDER)] == [campaign_id]


def test_chain_sends_batches_back_to_back_and_completes(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    numbers = [phone(i) for i in range(1200)]
    campaign_id = campaign_with_contacts(db, numbers, rate=1000)
    admin.start_campaign(db, sync_flags(), campaign_id)
    reports: list[BatchReport] = []

    async def after(report: BatchReport) -> None:
        reports.append(report)

    more = ports.run(
        run_chain(
            db, campaign_id, ports.gate, ports.transport, default_sender=SENDER, after_batch=after
        )
    )

    assert not more
    assert sum(r.claimed for r in reports) == 1200
    assert set(states(db, campaign_id).values()) == {"sent"}
    assert sim.stats()["accepted_total"] == 1200 and sim.stats()["duplicate_count"] == 0
    assert campaign_status(db, campaign_id)[0] == "completed"


def test_chain_gives_back_the_batch_claimed_ahead_when_paused(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(200)], rate=20)
    flags = sync_flags()
    admin.start_campaign(db, flags, campaign_id)
    reports: list[BatchReport] = []

    async def after(report: BatchReport) -> None:
        reports.append(report)

    async def pause_soon() -> bool:
        chain = asyncio.ensure_future(
            run_chain(
                db, campaign_id, ports.gate, ports.transport, default_sender=SENDER,
                after_batch=after,
            )
        )  # fmt: skip
        await asyncio.sleep(0.5)  # batches of 40 at 20/s: the first one is still sending
        await asyncio.to_thread(admin.pause_campaign, db, flags, campaign_id)
        return await chain

    more = ports.run(pause_soon())

    assert not more
    by_state = states(db, campaign_id)
    sent = sum(1 for s in by_state.values() if s == "sent")
    assert 1 <= sent < 40
    assert sum(1 for s in by_state.values() if s == "initial") == 200 - sent
    assert sim.stats()["accepted_total"] == sent
    assert sum(r.outcomes["released"] for r in reports) == 80 - sent  # this batch and the next
    rows = contact_rows(db, campaign_id)
    assert {r["attempts"] for r in rows if r["state"] == "initial"} == {0}


class HoldFirstSend:
    """Holds the chain's very first request open (a hanging platform answer) until enough
    later sends have gone out that some of them must belong to the next batch."""

    def __init__(self, inner: MessageTransport, release_after: int) -> None:
        self.inner = inner
        self.release_after = release_after
        self.others = 0
        self.calls = 0
        self.released = asyncio.Event()
        self.held_up = False  # the chain waited for the held request: the guard timed out

    async def send(self, job: rules.SendJob) -> SendResult:
        self.calls += 1
        if self.calls == 1:
            try:
                await asyncio.wait_for(self.released.wait(), timeout=20)
            except TimeoutError:
                self.held_up = True
            return await self.inner.send(job)
        result = await self.inner.send(job)
        self.others += 1
        if self.others >= self.release_after:
            self.released.set()
        return result


def test_a_slow_answer_holds_up_only_its_own_batch(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    """The next batch sends while a request of the previous one is still waiting for its
    answer (up to the client timeout): one slow request must not stall the campaign."""
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(700)], rate=1000)
    admin.start_campaign(db, sync_flags(), campaign_id)
    transport = HoldFirstSend(ports.transport, release_after=550)  # batches of 500 at 1,000/s
    reports: list[BatchReport] = []

    async def after(report: BatchReport) -> None:
        reports.append(report)

    more = ports.run(
        run_chain(db, campaign_id, ports.gate, transport, default_sender=SENDER, after_batch=after)
    )

    assert not transport.held_up, "the second batch waited for the first batch's slow answer"
    assert not more
    assert sum(r.claimed for r in reports) == 700
    assert set(states(db, campaign_id).values()) == {"sent"}
    assert sim.stats()["accepted_total"] == 700 and sim.stats()["duplicate_count"] == 0
    assert campaign_status(db, campaign_id)[0] == "completed"
