"""The sender's messaging tier in the gate's Lua scripts, on fakeredis (Lua through ``lupa``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import fakeredis.aioredis

from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.clients.send_gate import RedisSendGate, tier_blocked
from campaigns.domain.dispatch import GroupGrant, tier_reason

T = TypeVar("T")
SENDER = "s1"


def on_gate(
    body: Callable[[RedisSendGate, fakeredis.aioredis.FakeRedis], Awaitable[T]],
    *,
    limit: int = 3,
    window_s: float = 3600.0,
) -> T:
    async def main() -> T:
        r = fakeredis.aioredis.FakeRedis()
        try:
            gate = RedisSendGate(
                r,
                RateLimiter(r),
                PauseFlags(r),
                messaging_limit=limit,
                tier_window_s=window_s,
            )
            return await body(gate, r)
        finally:
            await r.aclose()

    return asyncio.run(main())


async def group(gate: RedisSendGate, names: list[str], campaign_id: int = 1) -> GroupGrant:
    return await gate.open_group(
        campaign_id, SENDER, 1000.0, len(names), [f"+49{n}" for n in names]
    )


def test_new_recipients_are_admitted_only_up_to_the_limit() -> None:
    async def body(
        gate: RedisSendGate, r: fakeredis.aioredis.FakeRedis
    ) -> tuple[GroupGrant, list[bool], int, float, int]:
        before = time.time()
        grant = await group(gate, ["1", "2", "3", "4", "5"])
        members = await r.zcard(f"wa:tier:{SENDER}")
        ttl_ms = await r.pttl(f"wa:tier:blocked:{SENDER}")
        known = [await r.zscore(f"wa:tier:{SENDER}", f"+49{n}") is not None for n in "12345"]
        return grant, known, members, before, ttl_ms

    grant, known, members, before, ttl_ms = on_gate(body)
    assert grant.go and grant.refused == frozenset({3, 4})
    assert known == [True, True, True, False, False]  # refused: never counted
    assert members == 3
    assert grant.tier_free_at is not None
    assert before + 3600 - 1 <= grant.tier_free_at <= time.time() + 3600 + 1
    assert 3_590_000 < ttl_ms <= 3_600_000  # blocked until the oldest entry leaves


def test_a_recipient_already_in_the_window_does_not_use_a_slot() -> None:
    async def body(gate: RedisSendGate, r: fakeredis.aioredis.FakeRedis) -> list[GroupGrant]:
        first = await group(gate, ["1", "2", "3"])
        # Same people again (a retry, another campaign of the sender): admitted at the cap.
        again = await gate.open_group(2, SENDER, 1000.0, 3, ["+491", "+492", "+493"])
        new = await gate.open_group(2, SENDER, 1000.0, 2, ["+491", "+499"])
        return [first, again, new]

    first, again, new = on_gate(body)
    assert first.refused == frozenset() and first.tier_free_at is None
    assert again.refused == frozenset() and again.tier_free_at is None
    assert new.refused == frozenset({1})  # the known one passes, the new one does not


def test_entries_older_than_the_window_drop_out() -> None:
    async def body(
        gate: RedisSendGate, r: fakeredis.aioredis.FakeRedis
    ) -> tuple[GroupGrant, int, GroupGrant]:
        full = await group(gate, ["1", "2", "3"])
        refused = await group(gate, ["4"])
        blocked = (await gate.tier_room(SENDER)).room
        await asyncio.sleep(0.35)
        assert (await gate.tier_room(SENDER)).room == 3
        later = await group(gate, ["4", "5"])
        assert full.refused == frozenset()
        return refused, blocked, later

    refused, blocked, later = on_gate(body, window_s=0.3)
    assert refused.refused == frozenset({0}) and blocked == 0
    assert later.go and later.refused == frozenset()


def test_a_paused_campaign_admits_nobody() -> None:
    async def body(gate: RedisSendGate, r: fakeredis.aioredis.FakeRedis) -> tuple[bool, int]:
        await PauseFlags(r).set_paused(1)
        grant = await group(gate, ["1", "2"])
        return grant.go, await r.zcard(f"wa:tier:{SENDER}")

    assert on_gate(body) == (False, 0)


def test_tier_room_counts_headroom_and_blocks_at_zero() -> None:
    async def body(gate: RedisSendGate, r: fakeredis.aioredis.FakeRedis) -> list[int]:
        rooms = [(await gate.tier_room(SENDER)).room]
        await group(gate, ["1", "2"])
        rooms.append((await gate.tier_room(SENDER)).room)
        assert not await r.exists(f"wa:tier:blocked:{SENDER}")
        await group(gate, ["3"])
        room = await gate.tier_room(SENDER)
        assert room.free_at is not None and room.free_at > time.time() + 3500
        assert await r.exists(f"wa:tier:blocked:{SENDER}")
        rooms.append(room.room)
        return rooms

    assert on_gate(body) == [3, 1, 0]


def test_limit_zero_never_touches_the_tier_keys() -> None:
    async def body(gate: RedisSendGate, r: fakeredis.aioredis.FakeRedis) -> list[bytes]:
        for n in range(5):
            await group(gate, [f"{n}a", f"{n}b"])
        return cast(list[bytes], await r.keys("wa:tier*"))

    assert on_gate(body, limit=0) == []


def test_the_blocked_check_and_the_reason() -> None:
    async def body(gate: RedisSendGate, r: fakeredis.aioredis.FakeRedis) -> tuple[bool, bool]:
        before = await tier_blocked(r, SENDER)
        await r.set(f"wa:tier:blocked:{SENDER}", 1, px=10_000)
        return before, await tier_blocked(r, SENDER)

    assert on_gate(body) == (False, True)
    assert tier_reason(1000, 86400.0, 0.0) == (
        "waiting for the messaging tier: 1,000 unique recipients per 24 h, "
        "next slot at 1970-01-01T00:00:00+00:00"
    )
