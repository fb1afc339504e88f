"""``/metrics`` (Prometheus text) and the queue/worker readings behind it and the dashboard.

Served without a bearer token, as exporters usually are, but never on the API's port: a
listener of its own (``METRICS_PORT``, :func:`start_listener`, started by the app's
lifespan) that only Prometheus reaches. It names no contact, only counts and campaign ids.

Where each family comes from:
- telemetry counters in Redis, written by the workers (:mod:`campaigns.clients.telemetry`):
  messages, send latency, provider errors, webhook events and lag, limiter waits, ingest rows;
- Redis lists of the Celery queues (kombu keeps one list per queue and priority step);
- Celery remote control (``inspect``), sampled at most every few seconds: workers alive;
- Postgres: contacts by state, campaigns by status, upload rows by result.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from campaigns.clients import redis_keys, telemetry
from campaigns.domain.registry import Suppression
from campaigns.domain.states import CampaignStatus
from campaigns.runtime.queues import QUEUES
from campaigns.services import monitoring

log = logging.getLogger(__name__)

# kombu's Redis transport: a message with priority p > 0 waits in "{queue}\x06\x16{step}".
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
# kombu's hash of messages delivered to a worker and not acknowledged yet (acks late).
_UNACKED_KEY = "unacked"
# First time a task id was seen at the head of its queue (kombu stores no enqueue time).
_SEEN_TTL_S = 24 * 3600

# Every family /metrics exports (the deploy test checks alert rules and the Grafana dashboard
# against this; the integration test checks that /metrics really has each).
METRIC_NAMES = frozenset(
    {
        "wa_messages_total",
        "wa_send_latency_seconds",
        "wa_provider_errors_total",
        "wa_webhook_events_total",
        "wa_webhook_lag_seconds",
        "wa_ratelimiter_waits_total",
        "wa_ratelimiter_wait_seconds_total",
        "wa_queue_depth",
        "wa_queue_oldest_task_age_seconds",
        "wa_queue_reserved",
        "wa_workers_alive",
        "wa_worker_tasks_processed_total",
        "wa_contacts",
        "wa_campaigns",
        "wa_campaign_auto_paused",
        "wa_upload_rows_total",
        "wa_ingest_rows_total",
        "wa_contacts_suppressed_total",
        "wa_contact_checks_total",
    }
)


# --------------------------------------------------------------------------- queues


@dataclass(frozen=True, slots=True)
class QueueStats:
    name: str
    depth: int
    oldest_task_age_s: float | None  # None: empty, or the head message could not be read


def _queue_keys(queue: str) -> list[str]:
    return [queue, *(f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)]


def _task_id(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    try:
        message = json.loads(raw)
        headers = message.get("headers") or {}
        task_id = headers.get("id") or (message.get("properties") or {}).get("correlation_id")
    except (ValueError, AttributeError):
        return None
    return str(task_id) if task_id else None


def queue_stats(
    client: redis.Redis, queues: Iterable[str] = QUEUES, *, now: float | None = None
) -> list[QueueStats]:
    """Depth (all priority steps) and age of the oldest waiting task of each queue.

    kombu pushes with LPUSH and consumes from the right, so the oldest message of a list is
    at index -1. Messages carry no enqueue time: the first time a task id is seen at the
    head it is stamped in Redis (SET NX, shared by every API replica), and its age is
    counted from then: a lower bound, exact to the sampling interval.
    """
    now = time.time() if now is None else now
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for name in names:
        for key in _queue_keys(name):
            pipe.llen(key)
            pipe.lindex(key, -1)
    replies = pipe.execute()
    per_queue = 2 * (1 + len(_PRIORITY_STEPS))
    heads: dict[str, list[str]] = {}
    depths: dict[str, int] = {}
    for i, name in enumerate(names):
        chunk = replies[i * per_queue : (i + 1) * per_queue]
        depths[name] = sum(int(n) for n in chunk[0::2])
        heads[name] = [tid for tid in map(_task_id, chunk[1::2]) if tid]
    stamp = client.pipeline(transaction=False)
    seen_keys = [(name, redis_keys.queue_head_seen(tid)) for name in names for tid in heads[name]]
    for _, key in seen_keys:
        stamp.set(key, repr(now), nx=True, ex=_SEEN_TTL_S)
        stamp.get(key)
    stamped = stamp.execute() if seen_keys else []
    first_seen: dict[str, float] = {}
    for (name, _), seen in zip(seen_keys, stamped[1::2], strict=True):
        if seen is not None:
            first_seen[name] = min(first_seen.get(name, now), float(seen))
    return [
        QueueStats(
            name=name,
            depth=depths[name],
            oldest_task_age_s=max(0.0, now - first_seen[name]) if name in first_seen else None,
        )
        for name in names
    ]


def reserved_count(client: redis.Redis) -> int:
    """Tasks handed to workers and not acknowledged yet (running, prefetched or waiting an ETA)."""
    return int(client.hlen(_UNACKED_KEY))


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    name: str
    queues: tuple[str, ...]
    processed: int  # tasks this worker process ran since it started
    concurrency: int | None


@dataclass(frozen=True, slots=True)
class WorkersSnapshot:
    sampled_at: float
    workers: tuple[WorkerInfo, ...] = ()
    tasks_per_s: float | None = None  # None until two samples exist
    error: str | None = None

    def alive_per_queue(self, queues: Iterable[str] = QUEUES) -> dict[str, int]:
        return {q: sum(q in w.queues for w in self.workers) for q in queues}


@dataclass
class WorkerSampler:
    """Celery ``inspect`` replies, cached: a broadcast waits its whole timeout for replies.

    ``get(wait=False)`` never blocks once a first sample exists: a stale sample is returned
    and a refresh starts in a background thread (stale-while-revalidate). Routes call it
    from a worker thread (a ``def`` route), never on the event loop.
    """

    inspect_timeout_s: float = 1.0
    max_age_s: float = 5.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _done: threading.Condition = field(init=False)
    _snapshot: WorkersSnapshot | None = None
    _refreshing: bool = False
    _previous: tuple[float, dict[str, int]] | None = None

    def __post_init__(self) -> None:
        self._done = threading.Condition(self._lock)

    def get(self, *, wait: bool = False) -> WorkersSnapshot | None:
        with self._lock:
            snap = self._snapshot
            fresh = snap is not None and time.time() - snap.sampled_at < self.max_age_s
            if fresh:
                return snap
            start = not self._refreshing
            self._refreshing = True
        if start and (wait or snap is None):
            self._refresh()
        elif start:
            threading.Thread(target=self._refresh, name="worker-sampler", daemon=True).start()
        if wait or snap is None:
            with self._done:
                self._done.wait_for(
                    lambda: not self._refreshing, timeout=self.inspect_timeout_s * 4
                )
                return self._snapshot
        return snap

    def _refresh(self) -> None:
        try:
            snap = self._sample()
        except Exception as exc:  # broker down: say so on the dashboard, keep serving
            log.warning("celery inspect failed: %s", exc)
            snap = WorkersSnapshot(sampled_at=time.time(), error=str(exc) or type(exc).__name__)
        with self._done:
            self._snapshot = snap
            self._refreshing = False
            self._done.notify_all()

    def _sample(self) -> WorkersSnapshot:
        from workers.app import app  # the API builds the Celery app only when it needs it

        def ask(command: str) -> Mapping[str, Any]:
            # A connection of its own, closed after the reply: a pooled one would be left
            # inside a BRPOP for replies, and kombu closes pooled connections in any forked
            # child (e.g. the ingest parse pool), which then blocks reading that reply.
            with app.connection_for_read() as conn:
                inspect = app.control.inspect(timeout=self.inspect_timeout_s, connection=conn)
                return getattr(inspect, command)() or {}

        # Two broadcasts, each waiting the full timeout: run them side by side.
        with ThreadPoolExecutor(max_workers=2) as pool:
            stats_f = pool.submit(ask, "stats")
            queues_f = pool.submit(ask, "active_queues")
            stats = stats_f.result()
            active = queues_f.result()
        now = time.time()
        workers = []
        totals: dict[str, int] = {}
        for name in sorted(set(stats) | set(active)):
            info = stats.get(name) or {}
            processed = sum(int(n) for n in (info.get("total") or {}).values())
            totals[name] = processed
            pool_info = info.get("pool") or {}
            concurrency = pool_info.get("max-concurrency")
            workers.append(
                WorkerInfo(
                    name=name,
                    queues=tuple(sorted(q.get("name", "") for q in active.get(name) or ())),
                    processed=processed,
                    concurrency=int(concurrency) if concurrency is not None else None,
                )
            )
        rate = None
        if self._previous is not None:
            before, old = self._previous
            # A restarted worker starts from 0: count only growth, per worker.
            grown = sum(max(0, n - old[w]) for w, n in totals.items() if w in old)
            rate = grown / (now - before) if now > before else None
        self._previous = (now, totals)
        return WorkersSnapshot(sampled_at=now, workers=tuple(workers), tasks_per_s=rate)


SAMPLER = WorkerSampler()


# --------------------------------------------------------------------------- collector


def _histogram(name: str, doc: str, data: telemetry.HistogramData) -> HistogramMetricFamily:
    buckets = [
        *((repr(float(b)), float(n)) for b, n in zip(data.bounds, data.cumulative, strict=False)),
        ("+Inf", float(data.cumulative[-1])),
    ]
    family = HistogramMetricFamily(name, doc, labels=[])
    family.add_metric([], buckets, data.sum)
    return family


class CampaignCollector:
    """Reads everything at scrape time; nothing is kept in this process."""

    def __init__(
        self,
        engine: Engine,
        client: redis.Redis,
        sampler: WorkerSampler | None = None,
        *,
        query_timeout_s: float = 5.0,
    ) -> None:
        self._engine = engine
        self._redis = client
        self._query_timeout_s = query_timeout_s
        self._sampler = sampler or SAMPLER

    def collect(self) -> Iterator[Metric]:
        yield from self._telemetry()
        yield from self._queues()
        yield from self._database()

    def _telemetry(self) -> Iterator[Metric]:
        snap = telemetry.read_snapshot(self._redis)
        messages = CounterMetricFamily(
            "wa_messages",
            "Send attempts by campaign and outcome "
            "(sent, retry, sending_failed, error, unknown, released)",
            labels=["campaign_id", "outcome"],
        )
        for (campaign_id, outcome), n in sorted(snap.messages.items()):
            messages.add_metric([str(campaign_id), outcome], n)
        yield messages
        yield _histogram("wa_send_latency_seconds", "Cloud API send request latency", snap.latency)
        errors = CounterMetricFamily(
            "wa_provider_errors", "Platform error codes returned on sends", labels=["code"]
        )
        for code, n in sorted(snap.errors.items()):
            errors.add_metric([str(code)], n)
        yield errors
        webhooks = CounterMetricFamily(
            "wa_webhook_events", "Status webhook events applied, by status", labels=["status"]
        )
        for status, n in sorted(snap.webhooks.items()):
            webhooks.add_metric([status], n)
        yield webhooks
        yield _histogram(
            "wa_webhook_lag_seconds",
            "Delay from a status event's timestamp to its processing",
            snap.webhook_lag,
        )
        yield CounterMetricFamily(
            "wa_ratelimiter_waits",
            "Sends that had to wait for a rate-limiter token",
            value=snap.limiter_waits,
        )
        yield CounterMetricFamily(
            "wa_ratelimiter_wait_seconds",
            "Time sends spent waiting for rate-limiter tokens",
            value=snap.limiter_wait_s,
        )
        ingest = CounterMetricFamily(
            "wa_ingest_rows",
            "CSV rows validated by ingest workers, by result (a retried upload counts again)",
            labels=["result"],
        )
        for result in ("valid", "invalid"):
            ingest.add_metric([result], snap.upload_rows.get(result, 0))
        yield ingest
        yield from _registry_families(snap)

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "wa_queue_depth", "Tasks waiting in a Celery queue", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "wa_queue_oldest_task_age_seconds",
            "Age of the oldest waiting task (since first seen at the queue head); 0 when empty",
            labels=["queue"],
        )
        for q in queue_stats(self._redis):
            depth.add_metric([q.name], q.depth)
            age.add_metric([q.name], q.oldest_task_age_s or 0.0)
        yield depth
        yield age
        yield GaugeMetricFamily(
            "wa_queue_reserved",
            "Tasks delivered to workers and not yet acknowledged",
            value=reserved_count(self._redis),
        )
        snap = self._sampler.get(wait=True)
        alive = GaugeMetricFamily(
            "wa_workers_alive", "Celery workers consuming each queue", labels=["queue"]
        )
        processed = CounterMetricFamily(
            "wa_worker_tasks_processed",
            "Tasks run by each worker since it started",
            labels=["worker"],
        )
        if snap is not None and snap.error is None:
            for queue, n in snap.alive_per_queue().items():
                alive.add_metric([queue], n)
            for worker in snap.workers:
                processed.add_metric([worker.name], worker.processed)
        yield alive
        yield processed

    def _database(self) -> Iterator[Metric]:
        try:
            g = monitoring.gauges(self._engine, timeout_s=self._query_timeout_s)
        except DBAPIError as exc:
            # A slow or locked database costs this scrape its Postgres families, not the
            # queue and telemetry ones that matter most exactly then.
            log.warning("metrics: database families skipped: %s", type(exc.orig).__name__)
            return
        contacts = GaugeMetricFamily(
            "wa_contacts",
            "Contacts by campaign and state (live campaigns and those finished in the last day)",
            labels=["campaign_id", "state"],
        )
        for campaign_id, state, n in g.contacts:
            contacts.add_metric([str(campaign_id), state], n)
        yield contacts
        campaigns = GaugeMetricFamily("wa_campaigns", "Campaigns by status", labels=["status"])
        for status in CampaignStatus:
            campaigns.add_metric([status.value], g.campaigns.get(status.value, 0))
        yield campaigns
        paused = GaugeMetricFamily(
            "wa_campaign_auto_paused",
            "1 for each campaign that paused itself (bad template, token, account)",
            labels=["campaign_id"],
        )
        for campaign_id in g.auto_paused:
            paused.add_metric([str(campaign_id)], 1)
        yield paused
        rows = CounterMetricFamily(
            "wa_upload_rows", "Stored upload rows by validation result", labels=["result"]
        )
        rows.add_metric(["valid"], g.upload_valid)
        rows.add_metric(["invalid"], g.upload_invalid)
        yield rows


def _registry_families(snap: telemetry.Snapshot) -> Iterator[Metric]:
    suppressed = CounterMetricFamily(
        "wa_contacts_suppressed",
        "Contacts the registry refused, at upload (invalid_record) or send time "
        "(sending_failed), by reason",
        labels=["reason"],
    )
    for reason in Suppression:
        suppressed.add_metric([reason.value], snap.suppressed.get(reason.value, 0))
    yield suppressed
    checks = CounterMetricFamily(
        "wa_contact_checks",
        "Contacts check answers by status, and whether the registry answered (cached) or "
        "the provider was asked",
        labels=["status", "cached"],
    )
    for (status, cached), n in sorted(snap.contact_checks.items()):
        checks.add_metric([status, cached], n)
    yield checks


def registry_for(
    engine: Engine,
    client: redis.Redis,
    sampler: WorkerSampler | None = None,
    *,
    query_timeout_s: float = 5.0,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CampaignCollector(engine, client, sampler, query_timeout_s=query_timeout_s))
    return registry


def render(engine: Engine, client: redis.Redis, sampler: WorkerSampler | None = None) -> bytes:
    return generate_latest(registry_for(engine, client, sampler))


# --------------------------------------------------------------------------- listener


@dataclass
class MetricsListener:
    """prometheus_client's threaded HTTP server on its own port, serving our collector."""

    server: Any
    thread: threading.Thread

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_listener(
    engine: Engine,
    client: redis.Redis,
    *,
    host: str,
    port: int,
    query_timeout_s: float,
) -> MetricsListener | None:
    """Serves /metrics on ``host:port`` (0: a free port); None when the port is taken.

    A taken port is logged, not fatal: the API serves on, and Prometheus' ``up`` says the
    target is missing.
    """
    registry = registry_for(engine, client, query_timeout_s=query_timeout_s)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error("metrics listener not started on %s:%s: %s", host, port, exc)
        return None
    listener = MetricsListener(server, thread)
    log.info("metrics listener on %s", listener.url)
    return listener
