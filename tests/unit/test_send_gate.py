"""The Redis send gate per group of messages, on fakeredis (Lua through ``lupa``)."""

from __future__ import annotations

import asyncio

import fakeredis.aioredis
import pytest

from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.clients.send_gate import ChainKeys, RedisSendGate
from campaigns.domain.dispatch import GroupGrant, group_size

ATTEMPTS = ["a1", "a2", "a3", "a4"]


def open_group(paused: bool) -> tuple[GroupGrant, list[bytes], float]:
    async def main() -> tuple[GroupGrant, list[bytes], float]:
        r = fakeredis.aioredis.FakeRedis()
        try:
            flags = PauseFlags(r)
            gate = RedisSendGate(r, RateLimiter(r), flags)
            if paused:
                await flags.set_paused(7)
            before = asyncio.get_running_loop().time()
            grant = await gate.open_group(7, "s", 80.0, len(ATTEMPTS))
            keys = [k if isinstance(k, bytes) else k.encode() for k in await r.keys("*")]
            return grant, sorted(keys), before
        finally:
            await r.aclose()

    return asyncio.run(main())


def test_a_group_books_its_tokens_as_one() -> None:
    grant, keys, before = open_group(paused=False)
    assert grant.go
    # A fresh bucket (burst 8 at 80/s) has the four tokens now: due at once.
    assert len(grant.due_at) == 4
    assert all(before <= t <= before + 0.05 for t in grant.due_at)
    # The campaign's bucket and the sender's; nothing about the attempts lives in Redis.
    assert keys == [b"wa:rl:campaign:7", b"wa:rl:s"]


def test_a_paused_campaign_gets_no_grant() -> None:
    grant, _, _ = open_group(paused=True)
    assert not grant.go and grant.due_at == ()


@pytest.mark.parametrize(("rate", "size"), [(1000.0, 50), (80.0, 4), (20.0, 1), (0.5, 1)])
def test_group_size_is_fifty_ms_of_sending(rate: float, size: int) -> None:
    assert group_size(rate) == size


def test_a_chain_key_has_one_owner_and_only_it_renews_or_releases() -> None:
    async def main() -> tuple[bool, bool, list[bool], list[bool], bool]:
        r = fakeredis.aioredis.FakeRedis()
        try:
            mine, theirs = ChainKeys(r, "me", ttl_s=30), ChainKeys(r, "them", ttl_s=30)
            took = await mine.try_take(5, 0)
            again = await theirs.try_take(5, 0)
            renewed = await mine.renew([(5, 0), (5, 1)])
            await theirs.release(5, 0)  # not theirs: stays
            foreign = await theirs.renew([(5, 0)])
            await mine.release(5, 0)
            return took, again, renewed, foreign, bool(await r.exists("wa:loop:5:0"))
        finally:
            await r.aclose()

    took, again, renewed, foreign, left = asyncio.run(main())
    assert took and not again
    assert renewed == [True, False] and foreign == [False]
    assert not left


def test_a_group_covers_a_slow_start_statement_up_to_a_limit() -> None:
    assert group_size(20.0, 0.01) == 1  # a fast ledger: ~50 ms of sending
    assert group_size(1000.0, 0.08) == 80  # 80 ms statements: groups of 80 ms
    assert group_size(1000.0, 5.0) == 100  # never more than MAX_GROUP_S of sending
    assert group_size(20.0, 5.0) == 2
