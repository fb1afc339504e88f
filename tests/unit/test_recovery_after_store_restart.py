"""Lease recovery after a Redis restart, a send gate that becomes unreachable mid-batch, and
the broker transport's behaviour on a lost connection: pure or in-process, no I/O."""

from __future__ import annotations

import asyncio
import types
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis

from campaigns.domain import dispatch as rules
from campaigns.domain.dispatch import ExpiredLease, GroupGrant
from campaigns.domain.states import ContactState as C
from campaigns.services.dispatch.send import send_claimed
from tests.unit.dispatch_fakes import AcceptAll, RecordingGate, contacts, plan

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
GRACE = 600.0


def lease(claimed_s_ago: float | None, *, expired_s_ago: float = 1.0) -> ExpiredLease:
    return ExpiredLease(
        id=1,
        campaign_id=1,
        attempt_id=uuid.uuid4(),
        attempts=1,
        lease_expires_at=NOW - timedelta(seconds=expired_s_ago),
        claimed_at=None if claimed_s_ago is None else NOW - timedelta(seconds=claimed_s_ago),
    )


def decide(item: ExpiredLease, *, started: bool, redis_up_s: float | None) -> tuple[C, str] | None:
    since = None if redis_up_s is None else NOW - timedelta(seconds=redis_up_s)
    return rules.decide_expired_lease(
        item, started=started, now=NOW, grace_s=GRACE, markers_since=since
    )


def test_no_marker_releases_a_lease_claimed_while_redis_was_up() -> None:
    verdict = decide(lease(60), started=False, redis_up_s=3600)
    assert verdict is not None and verdict[0] is C.INITIAL


def test_no_marker_proves_nothing_for_a_lease_claimed_before_redis_restarted() -> None:
    """The crash may have lost the marker of a send that went out: wait for its webhook."""
    assert decide(lease(60), started=False, redis_up_s=30) is None
    # Within the clock slack after the restart: still not trusted.
    slack = rules.MARKER_CLOCK_SLACK_S
    assert decide(lease(30 - slack / 2), started=False, redis_up_s=30) is None
    verdict = decide(lease(30 - slack * 2), started=False, redis_up_s=30)
    assert verdict is not None and verdict[0] is C.INITIAL


def test_an_untrusted_lease_becomes_outcome_unknown_after_the_grace() -> None:
    old = lease(GRACE + 60, expired_s_ago=GRACE + 1)
    verdict = decide(old, started=False, redis_up_s=GRACE)
    assert verdict == (C.ERROR, rules.OUTCOME_UNKNOWN_STORE)
    assert verdict[1].startswith("outcome unknown")


def test_started_leases_are_unchanged_by_the_restart_rule() -> None:
    assert decide(lease(60), started=True, redis_up_s=3600) is None
    assert decide(lease(60), started=True, redis_up_s=30) is None
    late = lease(GRACE + 60, expired_s_ago=GRACE + 1)
    assert decide(late, started=True, redis_up_s=30) == (C.ERROR, rules.OUTCOME_UNKNOWN)


def test_unknown_redis_start_or_claim_time() -> None:
    # No start time known (older callers): markers trusted as before.
    verdict = decide(lease(60), started=False, redis_up_s=None)
    assert verdict is not None and verdict[0] is C.INITIAL
    # No claim time on the lease: not trusted.
    assert decide(lease(None), started=False, redis_up_s=3600) is None


class FailingGate(RecordingGate):
    """Redis goes away after ``ok`` groups."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok

    async def open_group(
        self,
        campaign_id: int,
        sender_id: str,
        rate: float,
        attempts: Sequence[str],
        recipients: Sequence[str] = (),
    ) -> GroupGrant:
        if len(self.groups) >= self.ok:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return await super().open_group(campaign_id, sender_id, rate, attempts, recipients)


def test_an_unreachable_gate_gives_the_rest_of_the_batch_back() -> None:
    """The groups that passed are sent and recorded; the rest never went out, so they are
    released now rather than left In progress for lease recovery (which, after a Redis
    restart, cannot tell them from sends whose markers were lost)."""
    gate, transport = FailingGate(ok=2), AcceptAll()
    claimed = contacts(20)
    stopped: list[bool] = []
    attempts = asyncio.run(
        send_claimed(plan(20), claimed, gate, transport, on_opened=stopped.append)
    )
    assert gate.groups == [1, 1]  # one message per group at 20 msg/s
    assert transport.sent == [c.phone_e164 for c in claimed[:2]]
    assert [a.result is not None for a in attempts] == [True] * 2 + [False] * 18
    assert stopped == [True]  # the chain stops; the next tick starts a new one


def test_broker_channel_of_a_lost_connection_raises_a_connection_error() -> None:
    """Celery handles connection errors on a lost broker; an AttributeError killed it."""
    from workers.app import RedisTransport

    channel = RedisTransport.Channel
    for transport in (None, types.SimpleNamespace(client=None)):
        dead = types.SimpleNamespace(connection=transport)
        with pytest.raises(redis.exceptions.ConnectionError) as raised:
            channel._connparams(cast(Any, dead))  # a channel whose connection is gone
        assert isinstance(raised.value, RedisTransport.connection_errors)
