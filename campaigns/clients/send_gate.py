"""Redis side of dispatch: the gate per group of messages (pacing, the pause flag, the
messaging tier), pause flags for admin commands, the keys that keep one chain per slot
alive, and the wake-up channel of the dispatchers.

What may leave is decided in Postgres (the send ledger's start statement, see
``campaigns.storage.dispatch.start_attempts``); Redis holds nothing recovery needs. Losing Redis
may slow a campaign, never give up a contact.

Messages pass the gate in groups of ~50 ms of sending (``campaigns.domain.dispatch.group_size``):
per group one limiter call checks the pause flag (a fast pre-check; the start statement
checks the campaign's status) and books all its tokens from the campaign's bucket and the
sender's (``RateLimiter.reserve_pair``); the group waits until its first token is due.

The messaging tier (``WHATSAPP_MESSAGING_LIMIT`` unique recipients per rolling 24 h per
sender number) is a sorted set ``wa:tier:{sender}`` of recipients scored by their last send
(ms, Redis clock). With a limit, the group's script admits recipients in the same call that
checks the pause flag: a recipient already in the window is admitted free, a new one only
while the set holds fewer than the limit, and refused ones set ``wa:tier:blocked:{sender}``
until the oldest entry leaves the window. Without a limit none of this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from campaigns.clients import redis_keys
from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.domain.dispatch import TIER_WINDOW_S, GroupGrant, TierRoom

__all__ = [
    "WAKE_CHANNEL",
    "ChainKeys",
    "RedisSendGate",
    "SyncPauseFlags",
    "WakeListener",
    "publish_wake",
    "tier_blocked",
]

# Start and resume publish here; every dispatcher listens and refreshes at once.
WAKE_CHANNEL = redis_keys.DISPATCH_WAKE

# The group script with the messaging tier. KEYS[1] pause flag, KEYS[2] tier set, KEYS[3]
# blocked key; ARGV[1] limit, ARGV[2] window ms, ARGV[3..] the recipients.
# {0}: paused, nothing admitted. {1, free_at_ms, refused (1-based indexes)...}: free_at_ms
# is when the oldest entry leaves the window (0: none refused).
_GO_TIER_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[2])
local refused = {}
for i = 3, #ARGV do
  local known = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if (not known) and count >= limit then
    refused[#refused + 1] = i - 2
  else
    redis.call('ZADD', KEYS[2], now, ARGV[i])
    if not known then count = count + 1 end
  end
end
local free_at = 0
if #refused > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  free_at = tonumber(oldest[2]) + window
  redis.call('SET', KEYS[3], free_at, 'PX', math.max(1, free_at - now))
end
if count > 0 then redis.call('PEXPIRE', KEYS[2], window) end
local out = {1, free_at}
for _, i in ipairs(refused) do out[#out + 1] = i end
return out
"""

# KEYS[1] tier set, KEYS[2] blocked key; ARGV[1] limit, ARGV[2] window ms.
# {room, free_at_ms}: room new recipients may start now; at 0, the blocked key is (re)set
# until free_at_ms, when the oldest entry leaves the window.
_TIER_ROOM_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local blocked = redis.call('PTTL', KEYS[2])
if blocked > 0 then return {0, now + blocked} end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local room = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
if room > 0 then return {room, 0} end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local free_at = tonumber(oldest[2]) + window
redis.call('SET', KEYS[2], free_at, 'PX', math.max(1, free_at - now))
return {0, free_at}
"""


class RedisSendGate:
    """``campaigns.services.dispatch.ports.SendGate`` on Redis; one per event loop."""

    def __init__(
        self,
        client: aioredis.Redis,
        limiter: RateLimiter,
        flags: PauseFlags,
        *,
        messaging_limit: int = 0,
        tier_window_s: float = TIER_WINDOW_S,
        sender_max_rate_per_s: float = 1000.0,
    ) -> None:
        """``messaging_limit``: unique recipients per sender number per ``tier_window_s``
        (0: unlimited, no tier keys are touched). ``sender_max_rate_per_s``: a sender
        number's platform throughput, the rate of its own bucket."""
        self._redis = client
        self._limiter = limiter
        self._flags = flags
        self._go_tier = client.register_script(_GO_TIER_LUA)
        self._tier_room = client.register_script(_TIER_ROOM_LUA)
        self._messaging_limit = messaging_limit
        self._tier_window_s = tier_window_s
        self._tier_window_ms = max(1, round(tier_window_s * 1000))
        self._sender_max = sender_max_rate_per_s

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    @property
    def messaging_limit(self) -> int:
        return self._messaging_limit

    @property
    def tier_window_s(self) -> float:
        return self._tier_window_s

    @property
    def sender_max_rate_per_s(self) -> float:
        return self._sender_max

    async def open_group(
        self,
        campaign_id: int,
        sender_id: str,
        rate: float,
        count: int,
        recipients: Sequence[str] = (),
    ) -> GroupGrant:
        """Books ``count`` tokens (the campaign's bucket at ``rate`` and the sender's) unless
        the pause flag is up, in one script call, and waits until the first is due (at most
        the booking horizon, ~0.1 s). A pause after the booking is the start statement's to
        see (Postgres; the flag is only the fast pre-check). With a messaging limit the
        recipients then pass the sender's tier in one more call that checks the flag again
        (module docstring)."""
        booking = await self._limiter.reserve_pair(
            campaign_id,
            rate,
            count,
            sender_id=sender_id,
            sender_rate_per_s=self._sender_max,
            refused_by=self._flags.key(campaign_id),
        )
        if booking is None:
            return GroupGrant(False, ())
        loop = asyncio.get_running_loop()
        booked_at = loop.time()
        first = booking.due_in(0)
        if first > 0:
            await asyncio.sleep(first)
        due_at = tuple(booked_at + booking.due_in(i) for i in range(count))
        if self._messaging_limit:
            return await self._open_tiered(campaign_id, sender_id, recipients, due_at)
        return GroupGrant(True, due_at)

    async def _open_tiered(
        self,
        campaign_id: int,
        sender_id: str,
        recipients: Sequence[str],
        due_at: tuple[float, ...],
    ) -> GroupGrant:
        if len(recipients) != len(due_at):
            raise ValueError("with a messaging limit every attempt needs its recipient")
        keys = [
            self._flags.key(campaign_id),
            redis_keys.tier(sender_id),
            redis_keys.tier_blocked(sender_id),
        ]
        args: list[str | int] = [self._messaging_limit, self._tier_window_ms, *recipients]
        reply = await self._go_tier(keys=keys, args=args)
        if not int(reply[0]):
            return GroupGrant(False, ())
        free_at_ms = int(reply[1])
        refused = frozenset(int(i) - 1 for i in reply[2:])
        free_at = free_at_ms / 1000 if refused else None
        return GroupGrant(True, due_at, refused, free_at)

    async def tier_room(self, sender_id: str) -> TierRoom:
        """How many new recipients the sender may still reach now; at 0 it is blocked until
        the oldest entry leaves the window (``TierRoom.free_at``)."""
        if not self._messaging_limit:
            return TierRoom(room=1 << 30)
        reply = await self._tier_room(
            keys=[redis_keys.tier(sender_id), redis_keys.tier_blocked(sender_id)],
            args=[self._messaging_limit, self._tier_window_ms],
        )
        room, free_at_ms = int(reply[0]), int(reply[1])
        return TierRoom(room=max(0, room), free_at=free_at_ms / 1000 if room <= 0 else None)

    async def is_paused(self, campaign_id: int) -> bool:
        return await self._flags.is_paused(campaign_id)

    async def pause(self, campaign_id: int) -> None:
        await self._flags.set_paused(campaign_id)

    async def slow_down(self, sender_id: str, seconds: float) -> None:
        await self._limiter.penalize(sender_id, seconds)


class SyncPauseFlags:
    """The same flags as ``PauseFlags``, for admin commands in synchronous code."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @staticmethod
    def key(campaign_id: int) -> str:
        return redis_keys.paused(campaign_id)

    def set_paused(self, campaign_id: int) -> None:
        self._redis.set(self.key(campaign_id), b"1")

    def clear(self, campaign_id: int) -> None:
        self._redis.delete(self.key(campaign_id))

    def is_paused(self, campaign_id: int) -> bool:
        return bool(self._redis.exists(self.key(campaign_id)))


async def tier_blocked(client: aioredis.Redis, sender_id: str) -> bool:
    """The sender's messaging tier is full and refused a send (or a claim found no room):
    the dispatchers start no chain for its campaigns until the key expires with the oldest
    entry's window."""
    return bool(await client.exists(redis_keys.tier_blocked(sender_id)))


def publish_wake(client: redis.Redis) -> None:
    """Wakes every dispatcher now (after start/resume): each refreshes its campaigns."""
    client.publish(WAKE_CHANNEL, b"1")


# KEYS: chain keys; ARGV[1] owner token, ARGV[2] TTL ms. Per key 1: still ours (TTL renewed),
# 0: it expired or another dispatcher took it.
_RENEW_LUA = """
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS[1] chain key; ARGV[1] owner token. Deletes it only if it is still ours.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ChainKeys:
    """One chain per (campaign, slot) across every dispatcher: a key taken with SET NX and
    an owner token, renewed while the chain lives and deleted when it ends. A dispatcher that
    dies lets its keys expire after ``ttl_s``; another one takes them at its next refresh.
    """

    def __init__(self, client: aioredis.Redis, owner: str, *, ttl_s: float = 30) -> None:
        self._redis = client
        self._owner = owner
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    @staticmethod
    def key(campaign_id: int, slot: int) -> str:
        return redis_keys.loop(campaign_id, slot)

    async def try_take(self, campaign_id: int, slot: int) -> bool:
        key = self.key(campaign_id, slot)
        return bool(await self._redis.set(key, self._owner, nx=True, px=self._ttl_ms))

    async def renew(self, chains: Sequence[tuple[int, int]]) -> list[bool]:
        """Renews the keys of these chains in one call; which are still ours."""
        if not chains:
            return []
        keys = [self.key(c, s) for c, s in chains]
        reply = await self._renew(keys=keys, args=[self._owner, self._ttl_ms])
        return [bool(int(x)) for x in reply]

    async def release(self, campaign_id: int, slot: int) -> None:
        await self._release(keys=[self.key(campaign_id, slot)], args=[self._owner])


class WakeListener:
    """A dispatcher's bounded wait: returns when start/resume publishes a wake-up
    (``publish_wake``) or after the timeout, whichever comes first. Without Redis it simply
    waits out the timeout (the dispatcher then refreshes on its period)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._pubsub: PubSub | None = None

    async def wait(self, timeout_s: float) -> bool:
        """Whether a wake-up came (False: the timeout passed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            if self._pubsub is None:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(WAKE_CHANNEL)
                self._pubsub = pubsub
            while (left := deadline - loop.time()) > 0:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=left
                )
                if message is not None:
                    return True
            return False
        except (redis.RedisError, OSError):
            await self.close()
            left = deadline - loop.time()
            if left > 0:
                await asyncio.sleep(left)
            return False

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
