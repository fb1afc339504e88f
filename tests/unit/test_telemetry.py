"""Redis-side telemetry: the async writers and the sync readers share one fake server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from campaigns.clients.telemetry import (
    LATENCY_BUCKETS,
    RATE_TTL_S,
    WEBHOOK_LAG_BUCKETS,
    SyncTelemetry,
    Telemetry,
    rate_now,
    rate_series,
    read_snapshot,
)

NOW = 1_750_000_000.4


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def sync_redis(server: fakeredis.FakeServer) -> redis.Redis:
    return fakeredis.FakeRedis(server=server)


def run(server: fakeredis.FakeServer, body: Callable[[Telemetry], Awaitable[None]]) -> None:
    async def main() -> None:
        client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=server)
        try:
            await body(Telemetry(client))
        finally:
            await client.aclose()

    asyncio.run(main())


def batch(
    t: Telemetry,
    *,
    campaign_id: int = 7,
    outcomes: dict[str, int] | None = None,
    error_codes: dict[int, int] | None = None,
    latencies_s: list[float] | None = None,
    accepted_at: list[float] | None = None,
    limiter_waits: int = 0,
    limiter_wait_s: float = 0.0,
) -> Awaitable[None]:
    return t.record_send_batch(
        campaign_id=campaign_id,
        outcomes=outcomes or {},
        error_codes=error_codes or {},
        latencies_s=latencies_s or [],
        accepted_at=accepted_at or [],
        limiter_waits=limiter_waits,
        limiter_wait_s=limiter_wait_s,
    )


def test_send_batches_add_up_per_campaign_and_outcome(
    server: fakeredis.FakeServer, sync_redis: redis.Redis
) -> None:
    async def body(t: Telemetry) -> None:
        await batch(t, campaign_id=7, outcomes={"sent": 3, "retry": 1, "error": 0})
        await batch(t, campaign_id=7, outcomes={"sent": 2}, error_codes={130429: 1, 132001: 2})
        await batch(t, campaign_id=8, outcomes={"sending_failed": 4}, error_codes={131026: 4})

    run(server, body)
    snap = read_snapshot(sync_redis)
    assert snap.messages == {(7, "sent"): 5, (7, "retry"): 1, (8, "sending_failed"): 4}
    assert snap.errors == {130429: 1, 132001: 2, 131026: 4}


def test_latency_histogram_buckets_are_cumulative_with_sum_and_count(
    server: fakeredis.FakeServer, sync_redis: redis.Redis
) -> None:
    # 0.05 sits exactly on a bound: "le" means it belongs to that bucket.
    latencies = [0.01, 0.05, 0.3, 0.3, 99.0]

    async def body(t: Telemetry) -> None:
        await batch(t, latencies_s=latencies[:2])
        await batch(t, latencies_s=latencies[2:])

    run(server, body)
    lat = read_snapshot(sync_redis).latency
    assert lat.bounds == LATENCY_BUCKETS
    by_bound = dict(zip((*LATENCY_BUCKETS, float("inf")), lat.cumulative, strict=True))
    assert by_bound[0.025] == 1
    assert by_bound[0.05] == 2
    assert by_bound[0.25] == 2
    assert by_bound[0.5] == 4
    assert by_bound[30.0] == 4
    assert by_bound[float("inf")] == 5
    assert lat.count == 5
    assert lat.sum == pytest.approx(sum(latencies))
    assert list(lat.cumulative) == sorted(lat.cumulative)


def test_rate_keys_count_per_second_and_expire(
    server: fakeredis.FakeServer, sync_redis: redis.Redis
) -> None:
    base = int(NOW)
    accepted = [base - 3 + 0.1, base - 3 + 0.9, base - 2 + 0.5, base - 1 + 0.0, base + 0.2]

    async def body(t: Telemetry) -> None:
        await batch(t, campaign_id=7, accepted_at=accepted)
        await batch(t, campaign_id=9, accepted_at=[base - 1 + 0.5] * 10)

    run(server, body)
    series = rate_series(sync_redis, 7, seconds=5, now=NOW)
    # Complete seconds only, oldest first; the second `base` is still filling.
    assert series == [(base - 5, 0), (base - 4, 0), (base - 3, 2), (base - 2, 1), (base - 1, 1)]
    assert rate_series(sync_redis, 9, seconds=2, now=NOW) == [(base - 2, 0), (base - 1, 10)]
    ttl = sync_redis.ttl(f"wa:m:rate:7:{base - 3}")
    assert 0 < int(ttl) <= RATE_TTL_S


def test_rate_now_is_the_mean_over_the_window(
    server: fakeredis.FakeServer, sync_redis: redis.Redis
) -> None:
    base = int(NOW)
    accepted = [float(base - s) + 0.5 for s in range(1, 11) for _ in range(80)]
    accepted += [float(base - 11)] * 1000  # outside a 10 s window

    async def body(t: Telemetry) -> None:
        await batch(t, campaign_id=3, accepted_at=accepted)

    run(server, body)
    assert rate_now(sync_redis, 3, window_s=10, now=NOW) == pytest.approx(80.0)
    assert rate_now(sync_redis, 3, window_s=20, now=NOW) == pytest.approx((800 + 1000) / 20)
    assert rate_now(sync_redis, 4, now=NOW) == 0.0
    with pytest.raises(ValueError, match="window_s"):
        rate_now(sync_redis, 3, window_s=0, now=NOW)


def test_limiter_waits_webhooks_and_upload_rows(
    server: fakeredis.FakeServer, sync_redis: redis.Redis
) -> None:
    async def body(t: Telemetry) -> None:
        await batch(t, limiter_waits=3, limiter_wait_s=0.25)
        await batch(t, limiter_waits=2, limiter_wait_s=0.5)

    run(server, body)
    sync = SyncTelemetry(sync_redis)
    sync.record_webhook_events(
        by_status={"delivered": 5, "read": 2, "failed": 0}, lags_s=[0.5, 4.0, 7000.0, -2.0]
    )
    sync.record_webhook_events(by_status={"delivered": 1}, lags_s=[])
    sync.record_upload_rows(valid=900, invalid=100)
    sync.record_upload_rows(valid=10, invalid=0)
    snap = read_snapshot(sync_redis)
    assert snap.limiter_waits == 5
    assert snap.limiter_wait_s == pytest.approx(0.75)
    assert snap.webhooks == {"delivered": 6, "read": 2}
    lag = snap.webhook_lag
    assert lag.bounds == WEBHOOK_LAG_BUCKETS
    by_bound = dict(zip((*WEBHOOK_LAG_BUCKETS, float("inf")), lag.cumulative, strict=True))
    # The negative lag (clock skew) counts as 0 s, not as a negative sum.
    assert by_bound[1.0] == 2
    assert by_bound[5.0] == 3
    assert by_bound[3600.0] == 3
    assert by_bound[float("inf")] == 4
    assert lag.sum == pytest.approx(0.5 + 4.0 + 7000.0)
    assert snap.upload_rows == {"valid": 910, "invalid": 100}


def test_a_send_batch_is_one_round_trip(server: fakeredis.FakeServer) -> None:
    calls: list[int] = []

    async def body(t: Telemetry) -> None:
        client = t._redis
        original = client.pipeline

        def counting_pipeline(*args: object, **kwargs: object) -> object:
            pipe = original(*args, **kwargs)  # type: ignore[arg-type]
            execute = pipe.execute

            async def counted(*a: object, **k: object) -> object:
                calls.append(len(pipe))
                return await execute(*a, **k)  # type: ignore[arg-type]

            pipe.execute = counted  # type: ignore[method-assign,assignment]
            return pipe

        client.pipeline = counting_pipeline  # type: ignore[method-assign,assignment]
        await batch(
            t,
            outcomes={"sent": 300, "retry": 2},
            error_codes={130429: 2},
            latencies_s=[0.2] * 302,
            accepted_at=[NOW] * 300,
            limiter_waits=1,
            limiter_wait_s=0.1,
        )
        await batch(t)  # nothing to record: no round trip at all

    run(server, body)
    assert len(calls) == 1
    assert calls[0] > 5  # several commands, one execute


def test_empty_redis_reads_as_zeros(sync_redis: redis.Redis) -> None:
    snap = read_snapshot(sync_redis)
    assert snap.messages == {}
    assert snap.latency.count == 0
    assert snap.latency.cumulative == (0,) * (len(LATENCY_BUCKETS) + 1)
    assert snap.limiter_waits == 0
    assert rate_series(sync_redis, 1, seconds=3, now=NOW) == [
        (int(NOW) - 3, 0),
        (int(NOW) - 2, 0),
        (int(NOW) - 1, 0),
    ]
