"""The Redis send gate per group of messages, on fakeredis (Lua through ``lupa``)."""

from __future__ import annotations

import asyncio

import fakeredis.aioredis
import pytest

from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.clients.send_gate import RedisSendGate, started_attempts
from campaigns.domain.dispatch import GroupGrant, group_size

ATTEMPTS = ["a1", "a2", "a3", "a4"]


def open_group(paused: bool) -> tuple[GroupGrant, list[bool], float]:
    async def main() -> tuple[GroupGrant, list[bool], float]:
        r = fakeredis.aioredis.FakeRedis()
        try:
            flags = PauseFlags(r)
            gate = RedisSendGate(r, RateLimiter(r), flags)
            if paused:
                await flags.set_paused(7)
            before = asyncio.get_running_loop().time()
            grant = await gate.open_group(7, "s", 80.0, ATTEMPTS)
            marked = [bool(await r.exists(f"wa:started:{a}")) for a in ATTEMPTS]
            return grant, marked, before
        finally:
            await r.aclose()

    return asyncio.run(main())


def test_a_group_is_marked_started_as_one() -> None:
    grant, marked, before = open_group(paused=False)
    assert grant.go and marked == [True] * 4
    # A fresh bucket (burst 8 at 80/s) has the four tokens now: due at once.
    assert len(grant.due_at) == 4
    assert all(before <= t <= before + 0.05 for t in grant.due_at)


def test_a_paused_campaign_marks_nothing() -> None:
    grant, marked, _ = open_group(paused=True)
    assert not grant.go and grant.due_at == ()
    assert marked == [False] * 4


def test_unmark_removes_markers_of_unsent_attempts() -> None:
    async def main() -> list[bool]:
        r = fakeredis.aioredis.FakeRedis()
        try:
            gate = RedisSendGate(r, RateLimiter(r), PauseFlags(r))
            await gate.open_group(1, "s", 80.0, ATTEMPTS)
            await gate.unmark(ATTEMPTS[2:])
            return [bool(await r.exists(f"wa:started:{a}")) for a in ATTEMPTS]
        finally:
            await r.aclose()

    assert asyncio.run(main()) == [True, True, False, False]


@pytest.mark.parametrize(("rate", "size"), [(1000.0, 50), (80.0, 4), (20.0, 1), (0.5, 1)])
def test_group_size_is_fifty_ms_of_sending(rate: float, size: int) -> None:
    assert group_size(rate) == size


def test_started_attempts_reads_markers() -> None:
    import uuid

    import fakeredis

    r = fakeredis.FakeRedis()
    a, b = uuid.uuid4(), uuid.uuid4()
    r.set(f"wa:started:{a}", b"1")
    assert started_attempts(r, [a, b]) == {a}
    assert started_attempts(r, []) == set()


def test_recovery_revokes_unstarted_attempts_and_the_gate_skips_them() -> None:
    import uuid

    import fakeredis

    server = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=server)
    started, late = uuid.uuid4(), uuid.uuid4()

    async def main() -> tuple[set[uuid.UUID], GroupGrant, set[uuid.UUID]]:
        r = fakeredis.aioredis.FakeRedis(server=server)
        try:
            gate = RedisSendGate(r, RateLimiter(r), PauseFlags(r))
            await gate.open_group(1, "s", 80.0, [str(started)])
            # The lease of `late` ran out before its group reached the gate.
            probed = started_attempts(sync, [started, late])
            grant = await gate.open_group(1, "s", 80.0, ["other", str(late)])
            return probed, grant, started_attempts(sync, [started, late])
        finally:
            await r.aclose()

    probed, grant, again = asyncio.run(main())
    assert probed == {started}  # `late` is revoked by this very probe
    assert grant.go and grant.revoked == frozenset({1})
    assert again == {started}  # a revoked attempt never turns into a started one
