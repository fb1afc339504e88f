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

# KEYS[1] pause flag, KEYS[2..] started markers; ARGV[1] marker TTL. 1: go (all marked),
# 0: paused (none marked). Atomic: a pause is either before the whole group or after it.
_GO_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], '1', 'EX', ARGV[1])
end
return 1
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
        go = await self._go(keys=keys, args=[STARTED_TTL_S])
        if not int(go):
            return GroupGrant(False, ())
        return GroupGrant(True, tuple(booked_at + booking.due_in(i) for i in range(len(attempts))))

    async def unmark(self, attempts: Sequence[str]) -> None:
        """Removes the started markers of marked attempts that were provably not sent."""
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
    """Which of these attempts passed the gate (their send may have reached the platform)."""
    if not attempts:
        return set()
    values = client.mget([_started_key(str(a)) for a in attempts])
    return {a for a, v in zip(attempts, values, strict=True) if v is not None}


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
