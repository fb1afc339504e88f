"""The send ledger on real Postgres: the start statement and lease recovery's release are
mutually exclusive under row locks, whichever comes first; held answers are counted; a
campaign whose answers all say it is wrong pauses itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, text

from campaigns.dev.simulator.outcomes import OutcomeKind
from campaigns.dev.simulator.runner import RunningSimulator
from campaigns.domain import dispatch as rules
from campaigns.domain.dispatch import ClaimedContact, SendJob, Starts
from campaigns.domain.outcomes import SendResult
from campaigns.services import admin
from campaigns.services.campaigns import get_campaign
from campaigns.services.dispatch.batch import BatchReport
from campaigns.services.dispatch.chain import run_chain
from campaigns.services.dispatch.ports import MessageTransport
from campaigns.services.dispatch.recovery import RecoveryReport, recover_expired_leases
from campaigns.storage import dispatch as dispatch_db
from tests.integration.dispatch_support import (
    SENDER,
    SendPorts,
    campaign_status,
    campaign_with_contacts,
    chain,
    contact_rows,
    counts,
    phone,
    send_ports,
    start_committed,
    sync_flags,
)


@pytest.fixture
def ports(sim: RunningSimulator) -> Iterator[SendPorts]:
    with send_ports(sim, timeout_s=1.0) as p:
        yield p


def claim_one(db: Engine, lease_s: float) -> tuple[int, ClaimedContact]:
    campaign_id = campaign_with_contacts(db, [phone(1)])
    admin.start_campaign(db, sync_flags(), campaign_id)
    with db.begin() as conn:
        (claimed,) = dispatch_db.claim_due(conn, campaign_id, limit=1, lease_s=lease_s)
    return campaign_id, claimed


async def start_connection(db: Engine) -> psycopg.AsyncConnection[Any]:
    """A connection for the start statement whose transaction the test keeps open (not
    autocommit: it begins at the first statement and ends at ``commit``)."""
    dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return await psycopg.AsyncConnection.connect(dsn)


def test_a_start_that_holds_the_row_wins_over_a_release(db: Engine) -> None:
    """The start statement ran while the lease was valid and holds its row lock; recovery
    (lease expired by its clock) waits for it, re-checks the row and does not release."""
    campaign_id, claimed = claim_one(db, lease_s=1.0)

    async def start_then_recover() -> RecoveryReport:
        async with await start_connection(db) as conn:
            attempt = [(claimed.id, claimed.attempt_id)]
            started = await dispatch_db.start_attempts(conn, attempt)
            assert started.started == {claimed.id} and not started.refused
            await asyncio.sleep(1.3)  # the lease runs out while the start is not yet committed
            recovery = asyncio.create_task(
                asyncio.to_thread(recover_expired_leases, db, grace_s=600)
            )
            await asyncio.sleep(0.5)
            assert not recovery.done(), "recovery must wait for the start statement's row lock"
            await conn.commit()
            return await asyncio.wait_for(recovery, 10)

    report = asyncio.run(start_then_recover())
    assert report.released == 0
    (row,) = contact_rows(db, campaign_id)
    assert row["state"] == "in_progress" and row["send_started_at"] is not None
    # Started: it waits for its webhook, then becomes outcome unknown; never a release.
    assert recover_expired_leases(db, grace_s=600).waiting == 1
    report = recover_expired_leases(db, grace_s=0)
    assert (report.released, report.errored) == (0, 1)
    (row,) = contact_rows(db, campaign_id)
    assert row["state"] == "error" and row["reason"] == rules.OUTCOME_UNKNOWN


def release(db: Engine, claimed: ClaimedContact) -> Connection:
    """Recovery's release of the claim, in a transaction left open (the caller commits)."""
    other = db.connect()
    other.begin()
    leases = dispatch_db.expired_leases(other)
    assert [lease.id for lease in leases] == [claimed.id]
    verdict = rules.decide_expired_lease(leases[0], now=leases[0].lease_expires_at, grace_s=0)
    assert verdict is not None
    assert dispatch_db.settle_leases(other, [(leases[0], *verdict)]) == 1
    return other


def test_a_release_that_holds_the_row_wins_over_a_start(db: Engine) -> None:
    """Recovery released the contact and holds its row; a start statement whose transaction
    began while the lease was valid waits, re-checks the row and starts nothing."""
    campaign_id, claimed = claim_one(db, lease_s=1.0)

    async def release_then_start() -> Starts:
        async with await start_connection(db) as conn:
            await conn.execute("SELECT 1")  # the start's transaction clock: lease still valid
            await asyncio.sleep(1.3)
            with release(db, claimed) as other:
                start = asyncio.create_task(
                    dispatch_db.start_attempts(conn, [(claimed.id, claimed.attempt_id)])
                )
                await asyncio.sleep(0.5)
                assert not start.done(), "the start statement must wait for recovery's row lock"
                other.commit()
            started = await asyncio.wait_for(start, 10)
            await conn.commit()
            return started

    assert asyncio.run(release_then_start()) == Starts()
    (row,) = contact_rows(db, campaign_id)
    assert row["state"] == "initial" and row["send_started_at"] is None
    assert row["attempts"] == 0


def test_the_start_statement_refuses_a_paused_campaign(db: Engine) -> None:
    campaign_id, claimed = claim_one(db, lease_s=60)
    admin.pause_campaign(db, sync_flags(), campaign_id)
    assert start_committed(db, [claimed]) == Starts()
    admin.resume_campaign(db, sync_flags(), campaign_id)
    assert start_committed(db, [claimed]) == Starts(frozenset({claimed.id}))


class Held:
    """The platform accepting every send but holding some for a quality assessment."""

    def __init__(self, inner: MessageTransport, held: set[str]) -> None:
        self.inner, self.held = inner, held

    async def send(self, job: SendJob) -> SendResult:
        result = await self.inner.send(job)
        if job.to_e164 in self.held:
            return SendResult(
                wamid=result.wamid,
                wa_id=result.wa_id,
                http_status=result.http_status,
                message_status="held_for_quality_assessment",
            )
        return result


def test_held_sends_are_stored_and_counted(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(10)])
    admin.start_campaign(db, sync_flags(), campaign_id)
    transport = Held(ports.transport, {phone(3), phone(7)})
    reports: list[BatchReport] = []

    async def keep(report: BatchReport) -> None:
        reports.append(report)

    ports.run(
        run_chain(db, campaign_id, ports.gate, transport, default_sender=SENDER, after_batch=keep)
    )
    rows = {r["phone_e164"]: r for r in contact_rows(db, campaign_id)}
    assert {p for p, r in rows.items() if r["message_status"] == "held_for_quality_assessment"} == {
        phone(3),
        phone(7),
    }
    assert all(r["state"] == "sent" for r in rows.values())
    assert sum(r.held for r in reports) == 2
    assert get_campaign(db, campaign_id).held == 2


def test_named_variables_are_sent_by_name(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    campaign_id = campaign_with_contacts(db, [phone(1)])
    with db.begin() as conn:
        conn.execute(
            text("UPDATE campaigns SET named_variables = true WHERE id = :c"), {"c": campaign_id}
        )
    admin.start_campaign(db, sync_flags(), campaign_id)
    jobs: list[SendJob] = []

    class Spy:
        async def send(self, job: SendJob) -> SendResult:
            jobs.append(job)
            return await ports.transport.send(job)

    ports.run(run_chain(db, campaign_id, ports.gate, Spy(), default_sender=SENDER))
    (job,) = jobs
    assert job.param_names == ("name",) and job.body_params == ("Name 0",)


def test_unknown_errors_in_a_row_pause_the_campaign(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    numbers = [phone(i) for i in range(60)]
    sim.update_config(explicit={p.removeprefix("+"): 987654 for p in numbers})
    campaign_id = campaign_with_contacts(db, numbers, rate=20)
    admin.start_campaign(db, sync_flags(), campaign_id)

    assert not ports.run(
        run_chain(
            db, campaign_id, ports.gate, ports.transport, default_sender=SENDER, pause_after=5
        )
    )
    status, reason = campaign_status(db, campaign_id)
    assert status == "paused"
    assert reason is not None and "unknown error 987654" in reason
    requests = sim.stats()["requests_total"]
    assert 5 <= requests <= 7  # at 20 msg/s the fifth answer stops the rest
    assert counts(db, campaign_id).get("error", 0) == requests
    assert sync_flags().is_paused(campaign_id)


def test_a_template_that_never_fits_its_data_pauses_the_campaign(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    numbers = [phone(i) for i in range(40)]
    sim.update_config(explicit={p.removeprefix("+"): 132012 for p in numbers})
    campaign_id = campaign_with_contacts(db, numbers, rate=20)
    admin.start_campaign(db, sync_flags(), campaign_id)
    chain(db, campaign_id, ports, max_s=5)
    status, reason = campaign_status(db, campaign_id)
    assert status == "paused" and reason is not None and "132012" in reason
    assert 20 <= sim.stats()["requests_total"] <= 22


def test_a_parameter_problem_among_sends_stays_the_contacts_own(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    numbers = [phone(i) for i in range(40)]
    sim.update_config(explicit={phone(5).removeprefix("+"): 132012})
    campaign_id = campaign_with_contacts(db, numbers, rate=1000)
    admin.start_campaign(db, sync_flags(), campaign_id)
    chain(db, campaign_id, ports)
    assert campaign_status(db, campaign_id)[0] == "completed"
    assert counts(db, campaign_id) == {"sent": 39, "error": 1}


def test_timeouts_are_not_answers_for_the_streaks(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    numbers = [phone(i) for i in range(4)]
    sim.update_config(explicit={p.removeprefix("+"): OutcomeKind.TIMEOUT for p in numbers})
    campaign_id = campaign_with_contacts(db, numbers, rate=1000)
    admin.start_campaign(db, sync_flags(), campaign_id)
    ports.run(
        run_chain(
            db, campaign_id, ports.gate, ports.transport, default_sender=SENDER, pause_after=2
        )
    )
    assert campaign_status(db, campaign_id)[0] == "running"
    assert counts(db, campaign_id) == {"in_progress": 4}
