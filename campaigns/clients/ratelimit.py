"""Per-sender token bucket shared by every worker, and the campaign pause flags (Redis).

The bucket is one Lua script (one round trip per call) over one hash per sender
(``tokens``, ``ts``, plus the last ``rate``/``burst``), timed by the Redis server clock
(``TIME``) so worker clocks do not matter.

Why ``reserve`` *books* tokens: with hundreds of concurrent senders per number, a plain
"take a token or come back when the next one is due" bucket wakes every waiter for every
token (1,000 waiters x 1,000 tokens/s = 10^6 round trips/s). Instead the script lets a caller
take tokens that become due within a booking horizon (the balance goes negative: a queue of
booked slots) and says when they are due; when that queue is full it says when it will have
room. Inside a process only one coroutine per sender talks to Redis at a time, so Redis sees
about ``rate + processes / horizon`` calls/s. The rate stays exact because the balance is
charged at booking time. A booked slot cannot be revoked: after ``penalize`` the tokens
already booked still go out.

``reserve`` books a *group* of ``cost`` tokens in one call (dispatch sends ~50 ms of messages
per group): the balance is charged ``cost`` at once and the answer says when the last of
them is due, so the caller can spread the group's sends over the times each token is due
(``Booking.due_in``). Waits are counted only when the script imposes them (a booked slot in
the future, or "queue full, come back later"), never for in-process queueing.
"""

from __future__ import annotations

import asyncio
import random
import textwrap
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from campaigns.clients import redis_keys

__all__ = ["Booking", "LimiterStats", "PauseFlags", "RateLimiter", "default_burst"]

# KEYS[1] bucket hash. ARGV: rate (tokens/s), burst, cost, horizon_s, penalty_s.
# Booking (penalty_s = 0) returns {taken, wait_us}:
#   {1, 0}  taken now;  {1, w}  taken (booked), due in w us: sleep, then go;
#   {0, w}  not taken, retry in w us (horizon 0: until a token is due).
# Penalty (penalty_s > 0, rate/burst "0": use the stored ones): no tokens until
# now + penalty_s; booked slots stay owed. Refill is suspended while ts is in the future.
# Replies are integers (Redis truncates Lua numbers); state is written with %.17g because
# tostring() keeps 14 digits, too few for microsecond timestamps.
# Tokens a bucket has now: full when new, refilled for the time since its last booking.
_REFILL = """
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
end
"""

_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local st = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'rate', 'burst')
local rate = tonumber(ARGV[1]) / 1000000
local burst = tonumber(ARGV[2])
if rate <= 0 then rate = (tonumber(st[3]) or 0) / 1000000 end
if burst <= 0 then burst = tonumber(st[4]) or 0 end
local cost = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4]) * 1000000
local penalty = tonumber(ARGV[5]) * 1000000
local tokens = tonumber(st[1])
local ts = tonumber(st[2])
{refill}local taken = 0
local wait = 0
if penalty > 0 then
  tokens = math.min(tokens, 0)
  ts = math.max(ts, now + penalty)
else
  -- A billionth of a token of float error must not cost a 1 us wait.
  local need = cost - tokens
  if need < 1e-9 then need = 0 end
  wait = (ts - now) + need / rate
  if wait <= horizon then
    tokens = tokens - cost
    taken = 1
  else
    wait = wait - horizon
  end
end
local f = '%.17g'
redis.call('HSET', KEYS[1], 'tokens', string.format(f, tokens), 'ts', string.format(f, ts),
  'rate', string.format(f, rate * 1000000), 'burst', string.format(f, burst))
-- Expire once the bucket would be full again: a missing key means exactly that.
local full_in = ts - now
if rate > 0 then full_in = full_in + math.max(0, burst - tokens) / rate end
redis.call('PEXPIRE', KEYS[1], math.ceil(full_in / 1000) + 1000)
return {taken, math.ceil(wait)}
""".replace("{refill}", _REFILL.lstrip("\n"))


# A group's booking against two buckets at once: its campaign's (KEYS[1], at the campaign's
# pacing rate) and its sender number's (KEYS[2], at the sender's platform limit: the safety
# net when campaigns of one sender ask for more than it carries). ARGV: rate1, burst1, rate2,
# burst2, cost, horizon_s. Both are charged ``cost`` together or neither; the wait is the
# later of the two. Returns {taken, wait_us} as _BUCKET_LUA; the hashes have its format, so
# its penalty (130429) on the sender's bucket holds up every campaign of that sender.
# KEYS[3], if given, is a flag that refuses the booking while it exists: {-1, 0}, nothing
# charged (the campaign's pause flag, checked in the same round trip).
_PAIR_LUA = """
if #KEYS > 2 and redis.call('EXISTS', KEYS[3]) == 1 then return {-1, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[5])
local horizon = tonumber(ARGV[6]) * 1000000
local state = {}
local wait = 0
for i = 1, 2 do
  local st = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local rate = tonumber(ARGV[2 * i - 1]) / 1000000
  local burst = tonumber(ARGV[2 * i])
  local tokens = tonumber(st[1])
  local ts = tonumber(st[2])
{refill_in_loop}  local need = cost - tokens
  if need < 1e-9 then need = 0 end
  wait = math.max(wait, (ts - now) + need / rate)
  state[i] = {tokens, ts, rate, burst}
end
local taken = 0
if wait <= horizon then
  taken = 1
else
  wait = wait - horizon
end
local f = '%.17g'
for i = 1, 2 do
  local tokens, ts, rate, burst = state[i][1], state[i][2], state[i][3], state[i][4]
  if taken == 1 then tokens = tokens - cost end
  redis.call('HSET', KEYS[i], 'tokens', string.format(f, tokens), 'ts', string.format(f, ts),
    'rate', string.format(f, rate * 1000000), 'burst', string.format(f, burst))
  local full_in = ts - now
  if rate > 0 then full_in = full_in + math.max(0, burst - tokens) / rate end
  redis.call('PEXPIRE', KEYS[i], math.ceil(full_in / 1000) + 1000)
end
return {taken, math.ceil(wait)}
""".replace("{refill_in_loop}", textwrap.indent(_REFILL.lstrip("\n"), "  "))


def default_burst(rate_per_s: float) -> float:
    """A tenth of a second of tokens (at least one).

    Big enough that short event-loop stalls do not lose tokens of an idle bucket, small
    enough that the initial burst adds < 1% over a 30 s window and a 1 s window of the
    platform sees at most 1.1 x the rate.
    """
    return max(1.0, rate_per_s / 10.0)


@dataclass(slots=True)
class LimiterStats:
    """Counters for metrics: how many sends waited for a token, and for how long in all.

    A wait is time the Redis script imposed (a booked token not yet due, or a full booking
    queue), not time spent queueing inside the process.
    """

    acquired: int = 0
    waits: int = 0
    waited_s: float = 0.0
    round_trips: int = 0


@dataclass(frozen=True, slots=True)
class Booking:
    """``cost`` booked tokens: the last is due ``last_due_s`` after the booking returned,
    the ones before it ``interval_s`` apart (earlier ones may be due at once)."""

    cost: int
    last_due_s: float
    interval_s: float
    slept_s: float = 0.0  # already waited for room in the booking queue

    def due_in(self, index: int) -> float:
        """Seconds after the booking until token ``index`` (0-based) is due; >= 0."""
        return max(0.0, self.last_due_s - (self.cost - 1 - index) * self.interval_s)

    def waits(self) -> tuple[int, float]:
        """(tokens that were not free at once, their total wait) - script-imposed only."""
        if self.slept_s > 0:
            total = self.cost * self.slept_s + sum(self.due_in(i) for i in range(self.cost))
            return self.cost, total
        # Tokens due at once come first: count only those due later.
        late = [d for d in (self.due_in(i) for i in range(self.cost)) if d > 0]
        return len(late), sum(late)


class RateLimiter:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        reserve_ahead_s: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        if reserve_ahead_s < 0:
            raise ValueError("reserve_ahead_s must be >= 0")
        self._redis = redis
        self._horizon = reserve_ahead_s
        self._rng = rng or random.Random()
        # EVALSHA, falling back to SCRIPT LOAD after a Redis restart (NoScriptError).
        self._script = redis.register_script(_BUCKET_LUA)
        self._pair = redis.register_script(_PAIR_LUA)
        self._gates: dict[str, asyncio.Lock] = {}  # per bucket; see _book()
        self.stats = LimiterStats()

    @staticmethod
    def key(sender_id: str) -> str:
        return redis_keys.rate_bucket(sender_id)

    @staticmethod
    def campaign_key(campaign_id: int) -> str:
        return redis_keys.campaign_bucket(campaign_id)

    async def _call(
        self,
        sender_id: str,
        rate: float,
        burst: float,
        horizon: float,
        penalty: float = 0.0,
        cost: int = 1,
    ) -> tuple[bool, float]:
        self.stats.round_trips += 1
        reply = await self._script(
            keys=[self.key(sender_id)],
            args=[repr(rate), repr(burst), str(cost), repr(horizon), repr(penalty)],
        )
        taken, wait_us = reply
        return bool(int(taken)), int(wait_us) / 1_000_000

    @staticmethod
    def _check(rate_per_s: float, burst: float | None) -> float:
        if not rate_per_s > 0:
            raise ValueError("rate_per_s must be > 0")
        burst = default_burst(rate_per_s) if burst is None else burst
        if not burst >= 1:
            raise ValueError("burst must be >= 1 (one message costs one token)")
        return burst

    def _gate(self, sender_id: str) -> asyncio.Lock:
        gate = self._gates.get(sender_id)
        if gate is None:
            gate = self._gates[sender_id] = asyncio.Lock()
        return gate

    async def _book(
        self, sender_id: str, rate_per_s: float, burst: float, cost: int, horizon: float
    ) -> tuple[float, float]:
        """Books ``cost`` tokens: (seconds until the last is due, seconds slept because the
        booking queue was full). One coroutine per sender talks to Redis at a time."""
        slept = 0.0
        async with self._gate(sender_id):
            while True:
                taken, wait = await self._call(sender_id, rate_per_s, burst, horizon, cost=cost)
                if taken:
                    return wait, slept
                # Booking queue full: come back when it has room, plus a spread so that
                # processes do not all return together. Half the horizon leaves the
                # queue at least half full meanwhile, so no token goes unused.
                pause = wait + self._rng.uniform(0.0, horizon / 2)
                started = time.monotonic()
                await asyncio.sleep(pause)
                slept += time.monotonic() - started

    async def reserve(
        self, sender_id: str, rate_per_s: float, cost: int, *, burst: float | None = None
    ) -> Booking:
        """Book ``cost`` tokens of ``sender_id`` in one script call (more only while the
        booking queue is full) and return when each is due; does not sleep for them.

        The bucket is charged at once, so the rate stays exact however the caller spaces
        its sends; spacing them by ``Booking.due_in`` keeps the platform's view smooth too.
        The booking horizon is at least two groups, so two processes booking groups in
        turn both find room. Statistics count every token whose due time is in the future
        (or that waited for queue room) as one wait, with that wait.
        """
        burst = self._check(rate_per_s, burst)
        if cost < 1:
            raise ValueError("cost must be >= 1")
        horizon = max(self._horizon, 2.0 * cost / rate_per_s)
        last_due, slept = await self._book(sender_id, rate_per_s, burst, cost, horizon)
        booking = Booking(cost, last_due, 1.0 / rate_per_s, slept)
        stats = self.stats
        stats.acquired += cost
        waits, waited = booking.waits()
        stats.waits += waits
        stats.waited_s += waited
        return booking

    async def reserve_pair(
        self,
        campaign_id: int,
        rate_per_s: float,
        cost: int,
        *,
        sender_id: str,
        sender_rate_per_s: float,
        refused_by: str | None = None,
    ) -> Booking | None:
        """As ``reserve``, against the campaign's own bucket (``rate_per_s``: its pacing
        rate) and the sender's (``sender_rate_per_s``: the sender's limit) in one script
        call: the group's tokens are due when both have them. So each campaign keeps its own
        rate whatever else runs on the sender, and the sender's total never passes its limit.
        None, with nothing booked, while the key ``refused_by`` exists (a pause flag).
        """
        burst = self._check(rate_per_s, None)
        sender_burst = self._check(sender_rate_per_s, None)
        if cost < 1:
            raise ValueError("cost must be >= 1")
        horizon = max(self._horizon, 2.0 * cost / rate_per_s)
        key = self.campaign_key(campaign_id)
        keys = [key, self.key(sender_id)] + ([refused_by] if refused_by else [])
        args = [repr(rate_per_s), repr(burst), repr(sender_rate_per_s), repr(sender_burst)]
        args += [str(cost), repr(horizon)]
        slept = 0.0
        async with self._gate(key):
            while True:
                self.stats.round_trips += 1
                reply = await self._pair(keys=keys, args=args)
                if int(reply[0]) < 0:
                    return None
                taken, wait_s = bool(int(reply[0])), int(reply[1]) / 1_000_000
                if taken:
                    break
                pause = wait_s + self._rng.uniform(0.0, horizon / 2)
                started = time.monotonic()
                await asyncio.sleep(pause)
                slept += time.monotonic() - started
        booking = Booking(cost, wait_s, 1.0 / rate_per_s, slept)
        self.stats.acquired += cost
        waits, waited = booking.waits()
        self.stats.waits += waits
        self.stats.waited_s += waited
        return booking

    async def penalize(self, sender_id: str, seconds: float) -> None:
        """No new tokens for ``sender_id`` for ``seconds`` (after 130429), for every worker.

        Extends, never shortens, a running penalty; afterwards the bucket refills from
        empty, so there is no burst right after it.
        """
        if not seconds > 0:
            return
        # rate/burst "0": the script refills with the ones stored by the last booking.
        await self._call(sender_id, 0.0, 0.0, 0.0, penalty=seconds)


class PauseFlags:
    """Campaign pause flags, read before each message (design: pause within 1 s).

    Postgres stays the source of truth (claims only take running campaigns); the flag is
    what stops sends already claimed. No TTL: a pause lasts until cleared.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    @staticmethod
    def key(campaign_id: int) -> str:
        return redis_keys.paused(campaign_id)

    async def set_paused(self, campaign_id: int) -> None:
        await self._redis.set(self.key(campaign_id), b"1")

    async def clear(self, campaign_id: int) -> None:
        await self._redis.delete(self.key(campaign_id))

    async def is_paused(self, campaign_id: int) -> bool:
        return bool(await self._redis.exists(self.key(campaign_id)))
