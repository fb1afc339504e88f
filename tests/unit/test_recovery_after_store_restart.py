"""Lease recovery's verdicts from the send ledger, a send gate that becomes unreachable
mid-batch, and the broker transport's behaviour on a lost connection: pure or in-process,
no I/O."""

from __future__ import annotations

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
from tests.unit.dispatch_fakes import AcceptAll, RecordingGate, contacts, plan, send

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
GRACE = 600.0


def lease(*, started: bool, expired_s_ago: float = 1.0, attempts: int = 1) -> ExpiredLease:
    return ExpiredLease(
        id=1,
        campaign_id=1,
        attempt_id=uuid.uuid4(),
        attempts=attempts,
        lease_expires_at=NOW - timedelta(seconds=expired_s_ago),
        started=started,
    )


def decide(item: ExpiredLease) -> tuple[C, str] | None:
    return rules.decide_expired_lease(item, now=NOW, grace_s=GRACE)


def test_a_lease_without_a_start_mark_is_released_whatever_happened_to_redis() -> None:
    """The start mark lives in Postgres: without it nothing of the attempt left."""
    assert decide(lease(started=False)) == (C.INITIAL, rules.RELEASED_UNSTARTED)
    # Long expired too: never outcome unknown, never waiting.
    assert decide(lease(started=False, expired_s_ago=GRACE * 10)) == (
        C.INITIAL,
        rules.RELEASED_UNSTARTED,
    )
    # A retry that never started goes back to Retry scheduled (the attempt is not counted).
    verdict = decide(lease(started=False, attempts=3))
    assert verdict is not None and verdict[0] is C.RETRY_SCHEDULED


def test_a_started_lease_waits_for_its_webhook_then_becomes_outcome_unknown() -> None:
    assert decide(lease(started=True)) is None
    assert decide(lease(started=True, expired_s_ago=GRACE - 1)) is None
    verdict = decide(lease(started=True, expired_s_ago=GRACE + 1))
    assert verdict == (C.ERROR, rules.OUTCOME_UNKNOWN)
    assert verdict[1].startswith("outcome unknown")


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
        count: int,
        recipients: Sequence[str] = (),
    ) -> GroupGrant:
        if len(self.groups) >= self.ok:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return await super().open_group(campaign_id, sender_id, rate, count, recipients)


def test_an_unreachable_gate_gives_the_rest_of_the_batch_back() -> None:
    """The groups that passed are sent and recorded; the rest never started, so they are
    released now rather than left In progress for lease recovery (which would release them
    too, a lease later)."""
    gate, transport = FailingGate(ok=2), AcceptAll()
    claimed = contacts(20)
    attempts, stopped = send(plan(20), claimed, gate, transport)
    assert gate.groups == [1, 1]  # one message per group at 20 msg/s
    assert transport.sent == [c.phone_e164 for c in claimed[:2]]
    assert [a.result is not None for a in attempts] == [True] * 2 + [False] * 18
    assert stopped  # the chain stops; the dispatcher starts a new one


def test_broker_channel_of_a_lost_connection_raises_a_connection_error() -> None:
    """Celery handles connection errors on a lost broker; an AttributeError killed it."""
    from workers.broker import RedisTransport

    channel = RedisTransport.Channel
    for transport in (None, types.SimpleNamespace(client=None)):
        dead = types.SimpleNamespace(connection=transport)
        with pytest.raises(redis.exceptions.ConnectionError) as raised:
            channel._connparams(cast(Any, dead))  # a channel whose connection is gone
        assert isinstance(raised.value, RedisTransport.connection_errors)
