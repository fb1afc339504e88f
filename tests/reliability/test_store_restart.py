"""Restarts and crashes of Redis and Postgres mid-campaign, end to end: a real Celery worker
with the beat tick, the simulator (webhooks delayed, duplicated, reordered; some sends hang
past the client timeout, some fail delivery, some numbers are not on WhatsApp) and the HTTP
webhook receiver. Each test checks that the campaign completes, that nobody got a second
message (the simulator counts), and that every accepted send is accounted for.

These tests restart their stores, so they run on a private Postgres and Redis under their
own data dir, never on the session's shared ones (other tests run in parallel).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text

from campaigns.dev.simulator.outcomes import OutcomeRules
from campaigns.domain.dispatch import MAX_GROUP_S, group_size
from campaigns.runtime import embedded
from campaigns.runtime import stores as runtime
from campaigns.services import admin
from campaigns.storage import migrate
from tests.conftest import exported, truncate_all
from tests.fixtures.live import LiveStack, running_stack
from tests.fixtures.processes import wait_for
from tests.integration.dispatch_support import (
    campaign_status,
    campaign_with_contacts,
    counts,
    phone,
    sync_flags,
)

TOTAL = 450
RATE = 150  # msg/s: ~3 s of sending, the restart lands in the middle
SETTLED = ("sent", "delivered", "read", "delivery_failed")
PENDING = ("initial", "in_progress", "retry_scheduled")
# Every contact's outcome by the last two digits of its number (phone(i): i % 100).
OUTCOMES = OutcomeRules(undeliverable_share=0.02, delivery_fail_share=0.03, timeout_share=0.03)
OUTCOMES_REFUSED = sum(1 for i in range(TOTAL) if i % 100 < 2)  # undeliverable: refused
# What a worker death may give up unsent: the group that passed the start statement, per
# chain (DISPATCH_PARALLEL_BATCHES chains of one campaign).
EXPOSURE = 2 * group_size(RATE, MAX_GROUP_S)  # a group grows while Postgres is slow


@dataclass
class Stores:
    data_dir: Path
    pg: embedded.EmbeddedPostgres
    redis: embedded.EmbeddedRedis
    env: dict[str, str]


@pytest.fixture(scope="module")
def stores() -> Iterator[Stores]:
    """A private Postgres and Redis (short path: Postgres' Unix socket lives under it)."""
    data_dir = Path(tempfile.mkdtemp(prefix="wa-stores-"))
    try:
        pg = embedded.EmbeddedPostgres(data_dir / "pg")
        database_url = embedded.ensure_database(pg.start(), embedded.APP_DATABASE)
        migrate.upgrade(database_url)
        store = embedded.EmbeddedRedis(data_dir / "redis")
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": store.start(),
            "DATA_DIR": str(data_dir),
        }
        yield Stores(data_dir, pg, store, env)
    finally:
        embedded.down(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def private(stores: Stores, tmp_path: Path) -> Iterator[tuple[LiveStack, Engine, Stores]]:
    """The live stack on the private stores; this process points at them too meanwhile."""
    with exported(stores.env):
        engine = runtime.resolve().engine
        truncate_all(engine)
        redis.Redis.from_url(stores.env["REDIS_URL"]).flushall()
        with running_stack(tmp_path, env=stores.env, outcomes=OUTCOMES) as stack:
            try:
                yield stack, engine, stores
            finally:
                if stack.worker is not None and stack.worker.alive():
                    stack.worker.kill9()  # its work is checked; a warm shutdown costs seconds


def sends_past_a_durable_point(stack: LiveStack, stores: Stores) -> int:
    """The AOF's size now, once ~0.5 s more sends went out after it: what a crash with
    ``appendfsync everysec`` may lose."""
    durable = stores.redis.aof_path.stat().st_size
    before = stack.sim.stats(False)["accepted_total"]
    wait_for(
        lambda: stack.sim.stats(False)["accepted_total"] >= before + RATE // 2,
        timeout=10,
        what="more sends after the last durable AOF write",
    )
    return durable


def crash_redis(stores: Stores, durable: int) -> None:
    """kill -9 of redis-server, and its AOF cut back to ``durable`` bytes."""
    stores.redis.kill()
    with stores.redis.aof_path.open("r+b") as aof:
        aof.truncate(durable)


def start_mid_campaign(stack: LiveStack, engine: Engine) -> int:
    """A running campaign with sends accepted and a batch in flight."""
    campaign_id = campaign_with_contacts(engine, [phone(i) for i in range(TOTAL)], rate=RATE)
    stack.start_worker("worker-1")
    admin.start_campaign(engine, sync_flags(), campaign_id)
    wait_for(
        lambda: (
            stack.sim.stats(False)["accepted_total"] >= TOTAL // 4
            and counts(engine, campaign_id).get("in_progress", 0) > 0
        ),
        timeout=60,
        what="a batch in flight",
    )
    return campaign_id


def finish(stack: LiveStack, engine: Engine, campaign_id: int) -> dict[str, int]:
    """Waits for completion, then checks: nothing pending, nobody messaged twice, and every
    accepted send is a settled contact or an Error "outcome unknown" (a send whose answer was
    lost; never re-sent). Returns the final counts plus the unknown ones, sent or not."""

    def done() -> bool:
        for process in (stack.worker, stack.webhooks, stack.api):
            if process is not None and not process.alive():
                raise AssertionError(f"{process.argv} exited:\n" + process.log_tail())
        return campaign_status(engine, campaign_id)[0] == "completed"

    wait_for(done, timeout=60, what="the campaign to complete")
    final = counts(engine, campaign_id)
    assert not any(final.get(state, 0) for state in PENDING), final
    stats = stack.sim.stats()
    assert stats["duplicate_count"] == 0, stats["duplicates"][:10]
    accepted = {d for d, n in stats["accepted_by_recipient"].items() if n}
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT phone_e164, state, reason FROM contacts WHERE campaign_id = :c"),
            {"c": campaign_id},
        ).all()
    settled = {str(p).lstrip("+") for p, s, _ in rows if s in SETTLED}
    unknown = {
        str(p).lstrip("+")
        for p, s, r in rows
        if s == "error" and str(r or "").startswith("outcome unknown")
    }
    assert len(rows) == TOTAL
    assert settled <= accepted
    assert accepted - settled <= unknown, sorted(accepted - settled - unknown)[:10]
    assert stats["accepted_total"] == len(settled) + len(unknown & accepted)
    return {
        **final,
        "accepted": stats["accepted_total"],
        "unknown_sent": len(unknown & accepted),
        "unknown_unsent": len(unknown - accepted),
    }


def test_redis_graceful_restart_mid_campaign(
    private: tuple[LiveStack, Engine, Stores],
) -> None:
    """SIGTERM (Redis saves and fsyncs its AOF), then a start on the same port and dir: no
    marker is lost, so nothing needs to be given up."""
    stack, engine, stores = private
    campaign_id = start_mid_campaign(stack, engine)
    assert stores.redis.stop()
    stores.redis.start()
    result = finish(stack, engine, campaign_id)
    print("redis restart:", result)  # the numbers for the report (-s)


def test_redis_crash_mid_campaign(private: tuple[LiveStack, Engine, Stores]) -> None:
    """kill -9 of redis-server, and the AOF cut back to where it stood ~1 s earlier: the
    worst ``appendfsync everysec`` allows when the host goes down with it. What went out is
    known from Postgres (the send ledger), so nothing is given up: every claim that never
    passed the start statement is sent later, none is called outcome unknown."""
    stack, engine, stores = private
    campaign_id = start_mid_campaign(stack, engine)
    durable = sends_past_a_durable_point(stack, stores)
    crash_redis(stores, durable)
    stores.redis.start()
    result = finish(stack, engine, campaign_id)
    print("redis crash:", result)  # the numbers for the report (-s)
    assert result["unknown_unsent"] == 0
    assert result["accepted"] == TOTAL - OUTCOMES_REFUSED


def test_host_crash_redis_and_worker_mid_campaign(
    private: tuple[LiveStack, Engine, Stores],
) -> None:
    """The host of Redis and the dispatch worker goes down: both killed at once, the AOF cut
    back ~1 s. The worker's leases expire; recovery releases every one without a start mark
    (Postgres), so only groups that had passed the start statement (one per chain) may be
    given up as outcome unknown, however much the worker had claimed ahead."""
    stack, engine, stores = private
    campaign_id = start_mid_campaign(stack, engine)
    assert stack.worker is not None
    durable = sends_past_a_durable_point(stack, stores)
    stack.worker.kill9()
    crash_redis(stores, durable)
    stranded = counts(engine, campaign_id).get("in_progress", 0)
    assert stranded > 0  # the crash really hit claimed work
    stores.redis.start()
    stack.start_worker("worker-2")
    result = finish(stack, engine, campaign_id)
    print("host crash:", result, "stranded:", stranded)  # the numbers for the report (-s)
    # Only groups that passed the start statement can be given up: one per chain.
    assert result["unknown_unsent"] <= EXPOSURE
    assert result["unknown_sent"] + result["unknown_unsent"] <= stranded


def test_postgres_restart_mid_campaign(private: tuple[LiveStack, Engine, Stores]) -> None:
    """``pg_ctl restart -m fast``: every connection of the worker, the API and the webhook
    worker dies; batches being claimed or recorded fail. Outcomes arrive by webhook or by
    lease recovery; nobody is messaged twice."""
    stack, engine, stores = private
    campaign_id = start_mid_campaign(stack, engine)
    stores.pg.restart()
    result = finish(stack, engine, campaign_id)
    print("postgres restart:", result)  # the numbers for the report (-s)
