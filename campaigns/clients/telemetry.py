"""Metrics shared by every process, kept in Redis.

Workers are separate processes (often on other hosts) and ``/metrics`` is served by the
API, so per-process prometheus_client counters would show only the API's own share. Every
writer adds to Redis counters instead (one pipelined round trip per batch, never per
message) and the API reads them back when scraped (:func:`read_snapshot`).

Keys (named in :mod:`campaigns.clients.redis_keys`, all under ``wa:m``):

- ``MESSAGES``           hash ``"{campaign_id}|{outcome}"`` -> messages
- ``PROVIDER_ERRORS``    hash ``"{code}"`` -> provider errors
- ``SEND_LATENCY``       histogram of send latency (see below)
- ``WEBHOOK_EVENTS``     hash ``"{status}"`` -> webhook status events
- ``WEBHOOK_LAG``        histogram of webhook lag (event timestamp -> received)
- ``LIMITER``            hash ``waits`` (count), ``wait_s`` (float seconds)
- ``UPLOAD_ROWS``        hash ``valid`` / ``invalid`` -> upload rows validated
- ``SUPPRESSED``         hash ``"{reason}"`` -> contacts the registry refused (upload, send)
- ``CONTACT_CHECKS``     hash ``"{status}|{cached}"`` -> contacts check answers
- ``rate_second(c, s)``  accepted sends of campaign ``c`` in unix second ``s`` (TTL ~1 h)

A histogram hash holds non-cumulative bucket counts ``b0..bN`` (``bN`` is +Inf), ``sum``
and ``count``; the reader makes them cumulative. Counters live as long as Redis does
(AOF on): Prometheus treats a Redis wipe like a process restart (a counter reset).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from campaigns.clients import redis_keys as keys

__all__ = [
    "LATENCY_BUCKETS",
    "OUTCOMES",
    "WEBHOOK_LAG_BUCKETS",
    "HistogramData",
    "Snapshot",
    "SyncTelemetry",
    "Telemetry",
    "rate_now",
    "rate_series",
    "read_snapshot",
]

OUTCOMES = ("sent", "retry", "sending_failed", "error", "unknown", "released")
# Upper bounds in seconds. A Cloud API send takes ~100-500 ms; the tail shows throttling.
LATENCY_BUCKETS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Status webhooks normally arrive seconds after the event; minutes mean a backlog.
WEBHOOK_LAG_BUCKETS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# Per-second rate keys live this long: enough for the dashboard's "rate over time" chart.
RATE_TTL_S = 3600


def _hist_fields(values: Sequence[float], bounds: Sequence[float]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for value in values:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal").
        counts[f"b{bisect.bisect_left(bounds, value)}"] += 1
    return counts


class Telemetry:
    """The dispatch worker's writer (async). Each call is one pipelined round trip."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def record_send_batch(
        self,
        *,
        campaign_id: int,
        outcomes: Mapping[str, int],
        error_codes: Mapping[int, int],
        latencies_s: Sequence[float],
        accepted_at: Sequence[float],
        limiter_waits: int,
        limiter_wait_s: float,
        suppressed: Mapping[str, int] | None = None,
    ) -> None:
        pipe = self._redis.pipeline(transaction=False)
        _queue_suppressed(pipe, suppressed or {})
        for outcome, n in outcomes.items():
            if n:
                pipe.hincrby(keys.MESSAGES, f"{campaign_id}|{outcome}", n)
        for code, n in error_codes.items():
            if n:
                pipe.hincrby(keys.PROVIDER_ERRORS, str(code), n)
        _add_histogram(pipe, keys.SEND_LATENCY, latencies_s, LATENCY_BUCKETS)
        for second, n in Counter(int(t) for t in accepted_at).items():
            key = keys.rate_second(campaign_id, second)
            pipe.incrby(key, n)
            pipe.expire(key, RATE_TTL_S)
        if limiter_waits:
            pipe.hincrby(keys.LIMITER, "waits", limiter_waits)
        if limiter_wait_s > 0:
            pipe.hincrbyfloat(keys.LIMITER, "wait_s", limiter_wait_s)
        if len(pipe):
            await pipe.execute()


class SyncTelemetry:
    """The same writes from synchronous code (the webhook applier, ingest threads)."""

    def __init__(self, redis_sync: redis.Redis) -> None:
        self._redis = redis_sync

    def record_webhook_events(
        self, *, by_status: Mapping[str, int], lags_s: Sequence[float]
    ) -> None:
        pipe = self._redis.pipeline(transaction=False)
        _queue_webhook_events(pipe, by_status, lags_s)
        if len(pipe):
            pipe.execute()

    def record_upload_rows(
        self, *, valid: int, invalid: int, suppressed: Mapping[str, int] | None = None
    ) -> None:
        pipe = self._redis.pipeline(transaction=False)
        _queue_upload_rows(pipe, valid, invalid)
        _queue_suppressed(pipe, suppressed or {})
        if len(pipe):
            pipe.execute()

    def record_suppressed(self, by_reason: Mapping[str, int]) -> None:
        """Contacts the registry refused outside an upload or a send batch (a campaign's
        contacts check)."""
        pipe = self._redis.pipeline(transaction=False)
        _queue_suppressed(pipe, by_reason)
        if len(pipe):
            pipe.execute()

    def record_contact_checks(self, answers: Mapping[tuple[str, bool], int]) -> None:
        """Contacts check answers by (status, answered from the registry)."""
        pipe = self._redis.pipeline(transaction=False)
        for (status, cached), n in answers.items():
            if n:
                pipe.hincrby(keys.CONTACT_CHECKS, f"{status}|{str(cached).lower()}", n)
        if len(pipe):
            pipe.execute()


def _queue_suppressed(pipe: Any, by_reason: Mapping[str, int]) -> None:
    for reason, n in by_reason.items():
        if n:
            pipe.hincrby(keys.SUPPRESSED, reason, n)


def _queue_webhook_events(pipe: Any, by_status: Mapping[str, int], lags_s: Sequence[float]) -> None:
    for status, n in by_status.items():
        if n:
            pipe.hincrby(keys.WEBHOOK_EVENTS, status, n)
    _add_histogram(pipe, keys.WEBHOOK_LAG, lags_s, WEBHOOK_LAG_BUCKETS)


def _queue_upload_rows(pipe: Any, valid: int, invalid: int) -> None:
    if valid:
        pipe.hincrby(keys.UPLOAD_ROWS, "valid", valid)
    if invalid:
        pipe.hincrby(keys.UPLOAD_ROWS, "invalid", invalid)


def _add_histogram(pipe: Any, key: str, values: Sequence[float], bounds: Sequence[float]) -> None:
    # Negative lags (clock skew between Meta and us) would poison the sum: count them as 0.
    clean = [max(0.0, float(v)) for v in values if math.isfinite(v)]
    if not clean:
        return
    for bucket, n in _hist_fields(clean, bounds).items():
        pipe.hincrby(key, bucket, n)
    pipe.hincrbyfloat(key, "sum", sum(clean))
    pipe.hincrby(key, "count", len(clean))


# --------------------------------------------------------------------------- readers (sync)


def _complete_seconds(seconds: int, now: float | None) -> range:
    # The current second is still filling: a chart or rate including it would dip.
    end = int(time.time() if now is None else now)
    return range(end - seconds, end)


def rate_series(
    redis_sync: redis.Redis,
    campaign_id: int,
    *,
    seconds: int = 300,
    now: float | None = None,
) -> list[tuple[int, int]]:
    """Accepted sends per second for the last ``seconds`` complete seconds, oldest first."""
    if seconds <= 0:
        return []
    span = _complete_seconds(min(seconds, RATE_TTL_S), now)
    values = redis_sync.mget([keys.rate_second(campaign_id, s) for s in span])
    return [(s, int(v or 0)) for s, v in zip(span, values, strict=True)]


def rate_now(
    redis_sync: redis.Redis,
    campaign_id: int,
    *,
    window_s: int = 10,
    now: float | None = None,
) -> float:
    """Mean accepted sends per second over the last ``window_s`` complete seconds."""
    if window_s <= 0:
        raise ValueError("window_s must be > 0")
    series = rate_series(redis_sync, campaign_id, seconds=window_s, now=now)
    return sum(n for _, n in series) / window_s


@dataclass(frozen=True, slots=True)
class HistogramData:
    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # one per bound, then +Inf (== count)
    sum: float
    count: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything ``/metrics`` reads from telemetry, in one round trip."""

    messages: dict[tuple[int, str], int] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    latency: HistogramData = HistogramData(
        LATENCY_BUCKETS, (0,) * (len(LATENCY_BUCKETS) + 1), 0.0, 0
    )
    webhooks: dict[str, int] = field(default_factory=dict)
    webhook_lag: HistogramData = HistogramData(
        WEBHOOK_LAG_BUCKETS, (0,) * (len(WEBHOOK_LAG_BUCKETS) + 1), 0.0, 0
    )
    limiter_waits: int = 0
    limiter_wait_s: float = 0.0
    upload_rows: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    contact_checks: dict[tuple[str, str], int] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _histogram(raw: Mapping[Any, Any], bounds: tuple[float, ...]) -> HistogramData:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    running = 0
    cumulative = []
    for i in range(len(bounds) + 1):
        running += int(fields.get(f"b{i}", 0))
        cumulative.append(running)
    # The +Inf bucket must equal count; trust the buckets if a writer died between fields.
    return HistogramData(bounds, tuple(cumulative), float(fields.get("sum", 0.0)), running)


def read_snapshot(redis_sync: redis.Redis) -> Snapshot:
    pipe = redis_sync.pipeline(transaction=False)
    hashes = (
        keys.MESSAGES,
        keys.PROVIDER_ERRORS,
        keys.SEND_LATENCY,
        keys.WEBHOOK_EVENTS,
        keys.WEBHOOK_LAG,
        keys.LIMITER,
        keys.UPLOAD_ROWS,
        keys.SUPPRESSED,
        keys.CONTACT_CHECKS,
    )
    for key in hashes:
        pipe.hgetall(key)
    msg, err, lat, wh, whlag, lim, upl, supp, chk = pipe.execute()
    messages: dict[tuple[int, str], int] = {}
    for key, value in msg.items():
        campaign, _, outcome = _text(key).partition("|")
        if campaign.isdigit() and outcome:
            messages[(int(campaign), outcome)] = int(value)
    errors = {int(_text(k)): int(v) for k, v in err.items() if _text(k).lstrip("-").isdigit()}
    limiter = {_text(k): _text(v) for k, v in lim.items()}
    return Snapshot(
        messages=messages,
        errors=errors,
        latency=_histogram(lat, LATENCY_BUCKETS),
        webhooks={_text(k): int(v) for k, v in wh.items()},
        webhook_lag=_histogram(whlag, WEBHOOK_LAG_BUCKETS),
        limiter_waits=int(limiter.get("waits", 0)),
        limiter_wait_s=float(limiter.get("wait_s", 0.0)),
        upload_rows={_text(k): int(v) for k, v in upl.items()},
        suppressed={_text(k): int(v) for k, v in supp.items()},
        contact_checks={
            (status, cached): int(v)
            for k, v in chk.items()
            for status, _, cached in [_text(k).partition("|")]
            if cached
        },
    )
