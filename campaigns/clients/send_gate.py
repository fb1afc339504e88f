"""Redis side of dispatch: the per-message gate, pause flags for admin commands, started
markers for lease recovery, and the keys that keep one dispatch loop per slot alive.

Per message the gate costs one limiter call (often fewer: booked tokens) and one script call
that checks the pause flag and marks the attempt as started in the same round trip. The
marker is what lets recovery tell "never sent, safe to release" from "outcome unknown".
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import redis
import redis.asyncio as aioredis

from campaigns.clients.ratelimit import PauseFlags, RateLimiter

__all__ = ["DispatchLoops", "RedisSendGate", "SyncPauseFlags", "started_attempts"]

STARTED_PREFIX = "wa:started"
# Longer than any lease plus the recovery grace: the marker must outlive the question.
STARTED_TTL_S = 2 * 24 * 3600

# KEYS[1] pause flag, KEYS[2] started marker; ARGV[1] marker TTL. 1: go, 0: paused.
_GO_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
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

    async def before_send(
        self, campaign_id: int, sender_id: str, rate: float, attempt: str
    ) -> bool:
        # The flag is read after the token: a pause during the wait for a token still counts.
        await self._limiter.acquire(sender_id, rate)
        go = await self._go(
            keys=[self._flags.key(campaign_id), _started_key(attempt)], args=[STARTED_TTL_S]
        )
        return bool(int(go))

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
