"""Redis side of dispatch: the gate per group of messages, pause flags for admin commands,
started markers for lease recovery, and the keys that keep one dispatch loop per slot alive.

Messages pass the gate in groups of ~50 ms of sending (``campaigns.dispatch.group_size``):
per group one limiter call books all its tokens, then - once the group's first token is
due - one script call checks the pause flag and, only if the campaign is not paused, marks
every attempt of the group as started in the same round trip. The marker is what lets
recovery tell "never sent, safe to release" from "outcome unknown"; a marked attempt that
the batch then decides not to send (its own pause decision) gets its marker removed
(``unmark``) before the batch is recorded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import redis
import redis.asyncio as aioredis

from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.dispatch import GroupGrant

__all__ = ["DispatchLoops", "RedisSendGate", "SyncPauseFlags", "started_attempts"]

STARTED_PREFIX = "wa:started"
# Longer than any lease plus the recovery grace: the marker must outlive the question.
STARTED_TTL_S = 2 * 24 * 3600

# A marker is "1" (started: the send may have gone out) or "x" (revoked: lease recovery
# found it unstarted and gave the contact back; it must never be sent). Recovery and the
# gate decide with SET NX on the same key, so exactly one of them wins.
_STARTED = "1"
_REVOKED = "x"

# KEYS[1] pause flag, KEYS[2..] started markers; ARGV[1] marker TTL.
# {0}: paused, nothing marked. {1, i...}: all marked started except the (1-based) i's,
# revoked before the gate reached them. Atomic: a pause is before the whole group or after.
_GO_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local out = {1}
for i = 2, #KEYS do
  if not redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    out[#out + 1] = i - 1
  end
end
return out
"""

# KEYS: started markers; ARGV[1] TTL. Per key 1: started; 0: not started, now revoked.
_PROBE_LUA = """
local out = {}
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], 'x', 'NX', 'EX', ARGV[1]) then
    out[i] = 0
  elseif redis.call('GET', KEYS[i]) == '1' then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""


def _started_key(attempt: str) -> str:
    return f"{STARTED_PREFIX}:{attempt}"


class RedisSendGate:
    """``campaigns.dispatch.SendGate`` on Redis; one per event loop."""

    def __init__(self, client: aioredis.Redis, limiter: RateLimiter, flags: PauseFlags) -> None:
        self._redis = client
        self._limiter = limiter
        self._flags = flags
        self._go = client.register_script(_GO_LUA)

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    async def open_group(
        self, campaign_id: int, sender_id: str, rate: float, attempts: Sequence[str]
    ) -> GroupGrant:
        """Books one token per attempt, waits until the first is due, then checks the pause
        flag and marks all of them started (or none, if paused). The flag is read after the
        wait: a pause during the wait for tokens still counts."""
        booking = await self._limiter.reserve(sender_id, rate, len(attempts))
        loop = asyncio.get_running_loop()
        booked_at = loop.time()
        first = booking.due_in(0)
        if first > 0:
            await asyncio.sleep(first)
        keys = [self._flags.key(campaign_id)]
        keys.extend([f"{STARTED_PREFIX}:{a}" for a in attempts])
        reply = await self._go(keys=keys, args=[STARTED_TTL_S])
        if not int(reply[0]):
            return GroupGrant(False, ())
        revoked = frozenset(int(i) - 1 for i in reply[1:])
        due_at = tuple(booked_at + booking.due_in(i) for i in range(len(attempts)))
        return GroupGrant(True, due_at, revoked)

    async def unmark(self, attempts: Sequence[str]) -> None:
        """Removes the started markers of attempts this gate marked that were not sent."""
        if attempts:
            await self._redis.delete(*[_started_key(a) for a in attempts])

    async def is_paused(self, campaign_id: int) -> bool:
        return await self._flags.is_paused(campaign_id)

    async def pause(self, campaign_id: int) -> None:
        await self._flags.set_paused(campaign_id)

    async def slow_down(self, sender_id: str, seconds: float) -> None:
        await self._limiter.penalize(sender_id, seconds)


class SyncPauseFlags:
    """The same flags as ``PauseFlags``, for admin commands in synchronous code."""

    def __init__(self, client: redis.Redis, key_prefix: str = "wa:paused") -> None:
        self._redis = client
        self._prefix = key_prefix

    def key(self, campaign_id: int) -> str:
        return f"{self._prefix}:{campaign_id}"

    def set_paused(self, campaign_id: int) -> None:
        self._redis.set(self.key(campaign_id), b"1")

    def clear(self, campaign_id: int) -> None:
        self._redis.delete(self.key(campaign_id))

    def is_paused(self, campaign_id: int) -> bool:
        return bool(self._redis.exists(self.key(campaign_id)))


def started_attempts(client: redis.Redis, attempts: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these attempts passed the gate (their send may have reached the platform).

    The others are revoked in the same step: a gate that reaches them later will not send
    them, so recovery may give their contacts back without risking a second message.
    """
    if not attempts:
        return set()
    probe = client.register_script(_PROBE_LUA)
    flags = probe(keys=[_started_key(str(a)) for a in attempts], args=[STARTED_TTL_S])
    return {a for a, started in zip(attempts, flags, strict=True) if int(started)}


class DispatchLoops:
    """One self-re-enqueuing batch chain per (campaign, slot), kept alive by the beat tick.

    The tick takes the key with SET NX before enqueueing a chain; each batch refreshes its TTL;
    a chain that runs out of due work deletes it. A chain whose worker died simply lets the
    key expire, and the next tick starts a new one.
    """

    def __init__(self, client: redis.Redis, *, ttl_s: int = 30, prefix: str = "wa:loop") -> None:
        self._redis = client
        self._ttl = ttl_s
        self._prefix = prefix

    def key(self, campaign_id: int, slot: int) -> str:
        return f"{self._prefix}:{campaign_id}:{slot}"

    def try_take(self, campaign_id: int, slot: int) -> bool:
        return bool(self._redis.set(self.key(campaign_id, slot), b"1", nx=True, ex=self._ttl))

    def refresh(self, campaign_id: int, slot: int) -> None:
        self._redis.set(self.key(campaign_id, slot), b"1", ex=self._ttl)

    def release(self, campaign_id: int, slot: int) -> None:
        self._redis.delete(self.key(campaign_id, slot))
