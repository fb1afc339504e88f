"""The sender's messaging tier on real Postgres and Redis against the simulator."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine

from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.clients.send_gate import RedisSendGate, tier_blocked
from campaigns.dev.simulator.runner import RunningSimulator
from campaigns.runtime.stores import resolve
from campaigns.services import admin
from campaigns.services.dispatch.batch import claim_batch
from campaigns.services.dispatch.dispatcher import Dispatcher, DispatcherConfig
from campaigns.services.dispatch.plan import load_plan
from campaigns.services.dispatch.recovery import recover_expired_leases
from tests.integration.dispatch_support import (
    SENDER,
    SendPorts,
    campaign_status,
    campaign_with_contacts,
    chain,
    contact_rows,
    counts,
    phone,
    send_claimed,
    send_ports,
    sync_flags,
)

LIMIT = 4
WINDOW_S = 2.0


@pytest.fixture
def ports(sim: RunningSimulator) -> Iterator[SendPorts]:
    with send_ports(sim, timeout_s=1.0) as p:
        p.gate = RedisSendGate(
            p.redis,
            RateLimiter(p.redis),
            PauseFlags(p.redis),
            messaging_limit=LIMIT,
            tier_window_s=WINDOW_S,
        )
        yield p


def test_a_campaign_larger_than_the_tier_is_paced_over_windows(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(10)], rate=1000)
    admin.start_campaign(db, sync_flags(), campaign_id)
    plan = load_plan(db, campaign_id, SENDER)
    assert plan is not None

    # A batch claimed without looking at the headroom (two chains raced for it): the gate
    # admits 4 and the other 6 go back unsent, exactly like a pause release.
    claimed = claim_batch(db, plan, lease_margin_s=60)
    assert len(claimed) == 10
    reports = send_claimed(db, plan, claimed, ports, tier=(LIMIT, WINDOW_S))

    assert sim.stats()["accepted_total"] == LIMIT
    assert sum(r.outcomes["released"] for r in reports) == 6
    assert any(r.tier_free_at is not None for r in reports)
    assert counts(db, campaign_id) == {"sent": 4, "initial": 6}
    rows = contact_rows(db, campaign_id)
    assert {r["attempts"] for r in rows if r["state"] == "initial"} == {0}
    # Refused ones were never started; the sent ones were, before they left.
    assert sum(1 for r in rows if r["send_started_at"] is not None) == LIMIT
    status, reason = campaign_status(db, campaign_id)
    assert status == "running"
    assert reason is not None and reason.startswith(
        f"waiting for the messaging tier: {LIMIT} unique recipients per 2 s, next slot at "
    )
    assert ports.run(tier_blocked(ports.redis, SENDER))

    # While blocked a chain claims nothing; lease recovery finds nothing to call unknown.
    assert not chain(db, campaign_id, ports)
    assert sim.stats()["requests_total"] == LIMIT
    assert counts(db, campaign_id) == {"sent": 4, "initial": 6}
    recovery = recover_expired_leases(db, grace_s=0)
    assert (recovery.released, recovery.errored) == (0, 0)

    # Pause and resume still work while waiting; the wait shows again on the next chain.
    flags = sync_flags()
    admin.pause_campaign(db, flags, campaign_id)
    assert campaign_status(db, campaign_id) == ("paused", "paused by admin")
    admin.resume_campaign(db, flags, campaign_id)
    assert campaign_status(db, campaign_id) == ("running", None)
    assert not chain(db, campaign_id, ports)
    assert str(campaign_status(db, campaign_id)[1]).startswith("waiting for the messaging tier")

    # The window passes: the next four go out, the wait clears, then the last two.
    deadline = time.monotonic() + 10 * WINDOW_S
    while counts(db, campaign_id).get("initial") and time.monotonic() < deadline:
        time.sleep(0.1)
        before = sim.stats()["accepted_total"]
        chain(db, campaign_id, ports)
        assert sim.stats()["accepted_total"] - before <= LIMIT  # never more than the tier
        assert "in_progress" not in counts(db, campaign_id)
        if sim.stats()["accepted_total"] == 8 > before:
            assert campaign_status(db, campaign_id) == ("running", None)  # the wait cleared

    assert counts(db, campaign_id) == {"sent": 10}
    stats = sim.stats()
    assert stats["accepted_total"] == 10 and stats["duplicate_count"] == 0
    assert campaign_status(db, campaign_id) == ("completed", None)


def test_the_claim_is_limited_by_the_headroom(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(30)], rate=1000)
    admin.start_campaign(db, sync_flags(), campaign_id)

    assert not chain(db, campaign_id, ports)  # claims 4, sends 4: not a full batch
    assert counts(db, campaign_id) == {"sent": 4, "initial": 26}
    assert campaign_status(db, campaign_id) == ("running", None)
    assert not chain(db, campaign_id, ports)  # no room: nothing claimed, the wait shows
    assert counts(db, campaign_id) == {"sent": 4, "initial": 26}
    assert sim.stats()["requests_total"] == 4
    assert str(campaign_status(db, campaign_id)[1]).startswith("waiting for the messaging tier")
    assert ports.run(tier_blocked(ports.redis, SENDER))

    admin.cancel_campaign(db, sync_flags(), campaign_id)
    assert campaign_status(db, campaign_id) == ("cancelled", "cancelled by admin")


def test_limit_zero_never_touches_the_tier_keys(db: Engine, sim: RunningSimulator) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(50)], rate=1000)
    admin.start_campaign(db, sync_flags(), campaign_id)
    with send_ports(sim, timeout_s=1.0) as ports:
        assert ports.gate.messaging_limit == 0
        assert not chain(db, campaign_id, ports)
    assert counts(db, campaign_id) == {"sent": 50}
    assert redis.Redis.from_url(resolve().redis_url).keys("wa:tier*") == []


class Keys:
    """Chain keys that remember what the dispatcher took (and give every one)."""

    def __init__(self) -> None:
        self.taken: list[tuple[int, int]] = []

    async def try_take(self, campaign_id: int, slot: int) -> bool:
        self.taken.append((campaign_id, slot))
        return False  # no chain runs: this test looks only at what would start

    async def renew(self, chains: object) -> list[bool]:
        return []

    async def release(self, campaign_id: int, slot: int) -> None:
        return None


class NoWait:
    async def wait(self, timeout_s: float) -> bool:
        return False


def test_the_dispatcher_starts_no_chain_while_the_sender_is_blocked(
    db: Engine, ports: SendPorts
) -> None:
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(5)], rate=1000)
    admin.start_campaign(db, sync_flags(), campaign_id)
    sync_redis = redis.Redis.from_url(resolve().redis_url)
    sync_redis.set(f"wa:tier:blocked:{SENDER}", 1, px=60_000)
    keys = Keys()

    async def blocked(sender_id: str) -> bool:
        return await tier_blocked(ports.redis, sender_id)

    async def refresh_twice() -> None:
        dispatcher = Dispatcher(
            db,
            ports.gate,
            ports.transport,
            keys,
            NoWait(),
            DispatcherConfig(default_sender=SENDER, parallel=2),
            tier_blocked=blocked,
        )
        await dispatcher.refresh()
        assert keys.taken == []
        sync_redis.delete(f"wa:tier:blocked:{SENDER}")
        await dispatcher.refresh()

    ports.run(refresh_twice())
    # Its own slot at once; the other process's slot only after it stayed free a while.
    assert keys.taken == [(campaign_id, 0)]
