"""Redis token bucket and pause flags, on fakeredis (Lua through ``lupa``).

Pacing is checked on a simulated Redis clock: the script reads ``TIME`` from the server,
so moving fakeredis' clock moves the bucket without sleeping. Bookers waiting for room in a
full booking queue are checked with short real waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import fakeredis.aioredis
import pytest
import redis.asyncio as aioredis
from fakeredis.commands_mixins import server_mixin

from campaigns.clients.ratelimit import PauseFlags, RateLimiter, default_burst

T = TypeVar("T")


class FakeClock:
    """Stands in for the ``time`` module fakeredis' TIME command reads."""

    def __init__(self) -> None:
        self.now_us = int(time.time() * 1_000_000)  # whole microseconds, like TIME

    @property
    def now(self) -> float:
        return self.now_us / 1_000_000

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now_us += round(seconds * 1_000_000)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(server_mixin, "time", fake)
    return fake


def with_redis(test: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        r = fakeredis.aioredis.FakeRedis()
        try:
            return await test(r)
        finally:
            await r.aclose()

    return asyncio.run(main())


async def due_in(limiter: RateLimiter, sender: str, rate: float, **kw: float) -> float:
    """Books one token; seconds until it is due."""
    return (await limiter.reserve(sender, rate, 1, **kw)).due_in(0)


async def granted_over(
    limiter: RateLimiter, clock: FakeClock, sender: str, rate: float, seconds: float
) -> int:
    """Book token after token over ``seconds`` of simulated time, waiting for each."""
    end = clock.now + seconds
    granted = 0
    while True:
        wait = await due_in(limiter, sender, rate)
        if clock.now + wait > end:
            return granted
        granted += 1
        clock.advance(wait)


@pytest.mark.parametrize(("rate", "seconds"), [(80.0, 1.0), (1000.0, 0.05), (0.5, 20.0)])
def test_tokens_granted_at_the_configured_pace(
    clock: FakeClock, rate: float, seconds: float
) -> None:
    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r)
        granted = await granted_over(limiter, clock, "s1", rate, seconds)
        # One initial burst, then exactly the rate (+1 for the token due at the end).
        expected = default_burst(rate) + rate * seconds
        assert expected - 1 <= granted <= expected + 1

    with_redis(test)


def test_booked_tokens_are_due_one_interval_apart(clock: FakeClock) -> None:
    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r)
        assert await due_in(limiter, "s", 10.0, burst=1) == 0.0
        assert await due_in(limiter, "s", 10.0, burst=1) == pytest.approx(0.1, abs=1e-5)
        clock.advance(0.06)
        assert await due_in(limiter, "s", 10.0, burst=1) == pytest.approx(0.14, abs=1e-5)
        clock.advance(0.14)
        assert await due_in(limiter, "s", 10.0, burst=1) == pytest.approx(0.1, abs=1e-5)

    with_redis(test)


def test_idle_bucket_refills_only_up_to_burst(clock: FakeClock) -> None:
    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r)
        assert await due_in(limiter, "s", 100.0, burst=5) == 0.0
        clock.advance(60.0)
        taken = [await due_in(limiter, "s", 100.0, burst=5) for _ in range(6)]
        assert taken[:5] == [0.0] * 5
        assert taken[5] == pytest.approx(0.01, abs=1e-5)

    with_redis(test)


def test_senders_are_independent(clock: FakeClock) -> None:
    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r)
        assert await due_in(limiter, "a", 1.0, burst=1) == 0.0
        assert await due_in(limiter, "a", 1.0, burst=1) > 0.0
        assert await due_in(limiter, "b", 1.0, burst=1) == 0.0
        await limiter.penalize("a", 30.0)
        assert await due_in(limiter, "b", 1.0, burst=1) == pytest.approx(1.0, abs=1e-5)

    with_redis(test)


def test_workers_share_one_bucket(clock: FakeClock) -> None:
    async def test(r: aioredis.Redis) -> None:
        one, two = RateLimiter(r), RateLimiter(r)  # two processes, one Redis
        assert await due_in(one, "s", 1.0, burst=1) == 0.0
        assert await due_in(two, "s", 1.0, burst=1) == pytest.approx(1.0, abs=1e-5)

    with_redis(test)


def test_penalize_blocks_then_refills_from_empty(clock: FakeClock) -> None:
    async def test(r: aioredis.Redis) -> None:
        # A horizon past the penalty: the bookings answer at once (on the simulated clock).
        limiter = RateLimiter(r, reserve_ahead_s=10.0)
        assert await due_in(limiter, "s", 100.0, burst=10) == 0.0
        await limiter.penalize("s", 2.0)
        assert await due_in(limiter, "s", 100.0, burst=10) == pytest.approx(2.01, abs=1e-4)
        clock.advance(1.0)
        assert await due_in(limiter, "s", 100.0, burst=10) == pytest.approx(1.02, abs=1e-4)
        clock.advance(1.0)
        # No burst right after the penalty: one token per 1/rate again.
        assert await due_in(limiter, "s", 100.0, burst=10) == pytest.approx(0.03, abs=1e-4)
        clock.advance(0.03)
        assert await due_in(limiter, "s", 100.0, burst=10) == pytest.approx(0.01, abs=1e-4)

    with_redis(test)


def test_penalize_extends_never_shortens(clock: FakeClock) -> None:
    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r, reserve_ahead_s=60.0)
        await limiter.penalize("s", 5.0)
        await limiter.penalize("s", 1.0)
        assert await due_in(limiter, "s", 1000.0) >= 5.0
        await limiter.penalize("s", 10.0)
        assert await due_in(limiter, "s", 1000.0) >= 10.0

    with_redis(test)


def test_penalize_on_an_unknown_sender_blocks_it(clock: FakeClock) -> None:
    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r, reserve_ahead_s=10.0)
        await limiter.penalize("new", 3.0)
        assert await due_in(limiter, "new", 80.0) == pytest.approx(3.0 + 1 / 80, abs=1e-4)

    with_redis(test)


def test_bucket_key_expires_once_it_would_be_full(clock: FakeClock) -> None:
    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r)
        await limiter.reserve("s", 10.0, 1, burst=1)
        ttl_ms = await r.pttl("wa:rl:s")
        assert 1000 < ttl_ms <= 1100  # 0.1 s to refill + 1 s margin

    with_redis(test)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, None), (-1.0, None), (10.0, 0.5)])
def test_invalid_rates_are_refused(rate: float, burst: float | None) -> None:
    async def test(r: aioredis.Redis) -> None:
        with pytest.raises(ValueError, match="must be"):
            await RateLimiter(r).reserve("s", rate, 1, burst=burst)

    with_redis(test)


def test_a_token_in_the_bucket_is_no_wait() -> None:
    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r)
        booking = await limiter.reserve("s", 100.0, 1, burst=3)
        assert booking.due_in(0) == 0.0
        assert limiter.stats.acquired == 1
        assert limiter.stats.waits == 0

    with_redis(test)


def test_concurrent_bookers_wait_for_room_without_polling() -> None:
    rate, n, horizon = 100.0, 25, 0.1

    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r, reserve_ahead_s=horizon)
        loop = asyncio.get_running_loop()

        async def send() -> float:
            booking = await limiter.reserve("s", rate, 1, burst=1)
            due = loop.time() + booking.due_in(0)
            await asyncio.sleep(booking.due_in(0))  # what the send gate does
            return due

        started = loop.time()
        dues = sorted(await asyncio.gather(*(send() for _ in range(n))))
        elapsed = loop.time() - started
        # burst 1, then one token per 10 ms: the last one is due after (n - 1) / rate.
        assert (n - 1) / rate - 0.02 <= elapsed <= (n - 1) / rate + 0.25
        assert dues[-1] - dues[0] == pytest.approx((n - 1) / rate, abs=0.03)
        assert limiter.stats.acquired == n
        # All but the first wait; on a starved CPU a booking may come back after its token fell
        # due (then it is no wait), so a few may count as none.
        assert n // 2 <= limiter.stats.waits <= n - 1
        # Booked slots need one round trip; others come back when the queue has room.
        # A poll-per-token design would need ~n * n / 2 = 300 round trips here.
        assert limiter.stats.round_trips < 4 * n

    with_redis(test)


def test_pause_flags() -> None:
    async def test(r: aioredis.Redis) -> None:
        flags = PauseFlags(r)
        assert not await flags.is_paused(7)
        await flags.set_paused(7)
        assert await flags.is_paused(7)
        assert not await flags.is_paused(8)
        await flags.set_paused(7)  # idempotent
        await flags.clear(7)
        assert not await flags.is_paused(7)
        await flags.clear(7)  # clearing twice is fine
        assert await r.ttl(flags.key(7)) == -2

    with_redis(test)


def test_pause_flag_has_no_ttl() -> None:
    async def test(r: aioredis.Redis) -> None:
        flags = PauseFlags(r)
        await flags.set_paused(1)
        assert await r.ttl("wa:paused:1") == -1

    with_redis(test)


def test_reserve_books_a_group_and_spreads_its_due_times(clock: FakeClock) -> None:
    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r)
        # 100/s, burst 10: the first group of 5 is in the bucket, all due at once.
        first = await limiter.reserve("s", 100.0, 5, burst=10)
        assert [first.due_in(i) for i in range(5)] == [0.0] * 5
        assert limiter.stats.waits == 0 and limiter.stats.acquired == 5
        await limiter.reserve("s", 100.0, 5, burst=10)  # the bucket is now empty
        third = await limiter.reserve("s", 100.0, 5, burst=10)
        # Tokens 1..5 of the empty bucket: due 10 ms apart, the last after 50 ms.
        dues = [third.due_in(i) for i in range(5)]
        assert dues == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05], abs=1e-5)
        assert limiter.stats.waits == 5
        assert limiter.stats.waited_s == pytest.approx(0.15, abs=1e-4)
        assert limiter.stats.round_trips == 3  # one script call per group

    with_redis(test)


def test_groups_keep_the_bucket_exact(clock: FakeClock) -> None:
    async def test(r: aioredis.Redis) -> None:
        limiter = RateLimiter(r)
        rate, k, seconds = 80.0, 4, 30.0
        booked = 0
        end = clock.now + seconds
        while clock.now < end:
            booking = await limiter.reserve("s", rate, k)
            booked += k
            clock.advance(booking.due_in(0))  # the sender waits for the group's first token
        # 30 s at 80/s plus the initial burst (8), give or take one group.
        assert abs(booked - (rate * seconds + default_burst(rate))) <= k

    with_redis(test)


def test_reserve_refuses_an_empty_group() -> None:
    async def test(r: aioredis.Redis) -> None:
        with pytest.raises(ValueError, match="cost"):
            await RateLimiter(r).reserve("s", 10.0, 0)

    with_redis(test)
