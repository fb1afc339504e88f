"""Redis side of dispatch: the gate per group of messages, pause flags for admin commands,
started markers for lease recovery, and the keys that keep one dispatch loop per slot alive.

Messages pass the gate in groups of ~50 ms of sending (``campaigns.domain.dispatch.group_size``):
per group one limiter call books all its tokens, then - once the group's first token is
due - one script call checks the pause flag and, only if the campaign is not paused, marks
every attempt of the group as started in the same round trip. The marker is what lets
recovery tell "never sent, safe to release" from "outcome unknown"; a marked attempt that
the batch then decides not to send (its own pause decision) gets its marker removed
(``unmark``) before the batch is recorded.

The messaging tier (``WHATSAPP_MESSAGING_LIMIT`` unique recipients per rolling 24 h per
sender number) is a sorted set ``wa:tier:{sender}`` of recipients scored by their last send
(ms, Redis clock). With a limit, the group's script admits recipients in the same call that
checks the pause flag and sets the markers: a recipient already in the window is admitted
free, a new one only while the set holds fewer than the limit; only admitted attempts are
marked, and refused ones set ``wa:tier:blocked:{sender}`` until the oldest entry leaves the
window. Without a limit none of this runs (the plain script, no tier keys).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import redis
import redis.asyncio as aioredis

from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.domain.dispatch import TIER_WINDOW_S, GroupGrant, TierRoom

__all__ = [
    "DispatchLoops",
    "RedisSendGate",
    "SyncPauseFlags",
    "markers_since",
    "started_attempts",
    "tier_blocked",
]

TIER_PREFIX = "wa:tier"
TIER_BLOCKED_PREFIX = "wa:tier:blocked"

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

# The group script with the messaging tier. KEYS[1] pause flag, KEYS[2] tier set, KEYS[3]
# blocked key, KEYS[4..] started markers; ARGV[1] marker TTL, ARGV[2] limit, ARGV[3] window
# ms, ARGV[4..] the recipients (ARGV[i] belongs to KEYS[i]).
# {0}: paused, nothing marked or admitted. {1, free_at_ms, n, revoked (n 1-based indexes),
# refused (the rest)}: free_at_ms is when the oldest entry leaves the window (0: none
# refused). A revoked attempt is not admitted; a refused one is not marked.
_GO_TIER_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[2])
local revoked = {}
local refused = {}
for i = 4, #KEYS do
  local known = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if (not known) and count >= limit then
    refused[#refused + 1] = i - 3
  elseif redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('ZADD', KEYS[2], now, ARGV[i])
    if not known then count = count + 1 end
  else
    revoked[#revoked + 1] = i - 3
  end
end
local free_at = 0
if #refused > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  free_at = tonumber(oldest[2]) + window
  redis.call('SET', KEYS[3], free_at, 'PX', math.max(1, free_at - now))
end
if count > 0 then redis.call('PEXPIRE', KEYS[2], window) end
local out = {1, free_at, #revoked}
for _, i in ipairs(revoked) do out[#out + 1] = i end
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


def tier_key(sender_id: str) -> str:
    return f"{TIER_PREFIX}:{sender_id}"


def tier_blocked_key(sender_id: str) -> str:
    return f"{TIER_BLOCKED_PREFIX}:{sender_id}"


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
    ) -> None:
        """``messaging_limit``: unique recipients per sender number per ``tier_window_s``
        (0: unlimited, no tier keys are touched)."""
        self._redis = client
        self._limiter = limiter
        self._flags = flags
        self._go = client.register_script(_GO_LUA)
        self._go_tier = client.register_script(_GO_TIER_LUA)
        self._tier_room = client.register_script(_TIER_ROOM_LUA)
        self._messaging_limit = messaging_limit
        self._tier_window_s = tier_window_s
        self._tier_window_ms = max(1, round(tier_window_s * 1000))

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    @property
    def messaging_limit(self) -> int:
        return self._messaging_limit

    @property
    def tier_window_s(self) -> float:
        return self._tier_window_s

    async def open_group(
        self,
        campaign_id: int,
        sender_id: str,
        rate: float,
        attempts: Sequence[str],
        recipients: Sequence[str] = (),
    ) -> GroupGrant:
        """Books one token per attempt, waits until the first is due, then checks the pause
        flag and marks all of them started (or none, if paused). The flag is read after the
        wait: a pause during the wait for tokens still counts. With a messaging limit the
        recipients pass the sender's tier in that same script call (module docstring)."""
        booking = await self._limiter.reserve(sender_id, rate, len(attempts))
        loop = asyncio.get_running_loop()
        booked_at = loop.time()
        first = booking.due_in(0)
        if first > 0:
            await asyncio.sleep(first)
        due_at = tuple(booked_at + booking.due_in(i) for i in range(len(attempts)))
        keys = [self._flags.key(campaign_id)]
        if self._messaging_limit:
            return await self._open_tiered(keys, sender_id, attempts, recipients, due_at)
        keys.extend([_started_key(a) for a in attempts])
        reply = await self._go(keys=keys, args=[STARTED_TTL_S])
        if not int(reply[0]):
            return GroupGrant(False, ())
        revoked = frozenset(int(i) - 1 for i in reply[1:])
        return GroupGrant(True, due_at, revoked)

    async def _open_tiered(
        self,
        keys: list[str],
        sender_id: str,
        attempts: Sequence[str],
        recipients: Sequence[str],
        due_at: tuple[float, ...],
    ) -> GroupGrant:
        if len(recipients) != len(attempts):
            raise ValueError("with a messaging limit every attempt needs its recipient")
        keys.extend([tier_key(sender_id), tier_blocked_key(sender_id)])
        keys.extend([_started_key(a) for a in attempts])
        args: list[str | int] = [STARTED_TTL_S, self._messaging_limit, self._tier_window_ms]
        args.extend(recipients)
        reply = await self._go_tier(keys=keys, args=args)
        if not int(reply[0]):
            return GroupGrant(False, ())
        free_at_ms, n_revoked = int(reply[1]), int(reply[2])
        revoked = frozenset(int(i) - 1 for i in reply[3 : 3 + n_revoked])
        refused = frozenset(int(i) - 1 for i in reply[3 + n_revoked :])
        free_at = free_at_ms / 1000 if refused else None
        return GroupGrant(True, due_at, revoked, refused, free_at)

    async def tier_room(self, sender_id: str) -> TierRoom:
        """How many new recipients the sender may still reach now; at 0 it is blocked until
        the oldest entry leaves the window (``TierRoom.free_at``)."""
        if not self._messaging_limit:
            return TierRoom(room=1 << 30)
        reply = await self._tier_room(
            keys=[tier_key(sender_id), tier_blocked_key(sender_id)],
            args=[self._messaging_limit, self._tier_window_ms],
        )
        room, free_at_ms = int(reply[0]), int(reply[1])
        return TierRoom(room=max(0, room), free_at=free_at_ms / 1000 if room <= 0 else None)

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


def tier_blocked(client: redis.Redis, sender_id: str) -> bool:
    """The sender's messaging tier is full and refused a send (or a claim found no room):
    chains of its campaigns wait until the key expires with the oldest entry's window."""
    return bool(client.exists(tier_blocked_key(sender_id)))


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


def markers_since(client: redis.Redis) -> datetime:
    """When the running Redis process started (its own clock, one INFO round trip).

    Markers are written to the AOF once a second (``appendfsync everysec``): a Redis that
    crashed and came back may lack markers of sends that went out just before, so recovery
    trusts a missing marker only for leases claimed after this
    (``campaigns.domain.dispatch.markers_trusted``).
    """
    info = client.info("server")
    now_s = int(info["server_time_usec"]) / 1e6
    return datetime.fromtimestamp(now_s - int(info["uptime_in_seconds"]), UTC)


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
