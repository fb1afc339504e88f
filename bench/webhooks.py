"""Webhook benchmark: signed status POSTs -> HTTP receiver -> inbox -> Celery applier.

    python bench/webhooks.py [--contacts 100000] [--rate 6000 | --rate 0 --concurrency 16]

N contacts are created in state Sent with known wamids and attempt ids (one generate_series
INSERT); their statuses (60% sent/delivered/read, 30% sent/delivered, 10% sent/failed, plus
10% duplicates, shuffled) are posted signed, ``--per-post`` (50) per body like the platform,
with httpx over the aiohttp transport to ``wa-campaigns serve``; one
``wa-campaigns worker -Q webhooks`` process applies them.

Load: by default open loop at ``--rate`` statuses/s (each body sent at its due time, whatever
the answers to earlier ones - how the platform sends, and the receiver's latency at a known
load); ``--rate 0``: closed loop, ``--concurrency`` POSTs in flight, as fast as it goes (the
capacity; latency is then mostly queueing, concurrency / throughput).

Measured: ``applied_per_s`` = statuses / (first POST until the inbox holds nothing pending),
end to end; ``p50_ms`` / ``p99_ms`` = the receiver's answer time per POST, client side (from
sending the POST to its answer). Baseline, same run: the naive applier - one
transaction and commit per status (lock the contact, the same rules, update, log the event) -
on a further set of contacts, single process.

Diagnostics on stderr: how late the client sent (it shares the CPU); with BENCH_TRACE=1 also
the max and median latency per second of the run.

Prints one JSON line. Postgres and Redis are the embedded ones (a database and a Redis db of
their own) unless DATABASE_URL / REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport
from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from campaigns.dev.processes import Supervisor  # noqa: E402
from campaigns.domain.states import ContactState  # noqa: E402
from campaigns.domain.webhooks import Delivery, StatusEvent, StatusKind, settle  # noqa: E402
from campaigns.runtime import embedded  # noqa: E402
from campaigns.storage import migrate  # noqa: E402
from schemas.whatsapp import SIGNATURE_HEADER, sign_payload  # noqa: E402

SECRET = "bench-app-secret"
DATABASE = "wa_bench_webhooks"
REDIS_DB = 12
TS = 1_732_700_000
LIFECYCLES = (
    [("sent", "delivered", "read")] * 6 + [("sent", "delivered")] * 3 + [("sent", "failed")]
)
FINAL = {"read": "read", "delivered": "delivered", "failed": "delivery_failed"}


def attempt_of(i: int) -> str:
    """The attempt id of contact number i: the same md5 the SQL below uses."""
    return str(uuid.UUID(hashlib.md5(str(i).encode()).hexdigest()))  # noqa: S324 - an id


def services(data_dir: Path) -> tuple[str, str]:
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if not database_url:
        server_uri = embedded.EmbeddedPostgres(data_dir / "pg").start()
        database_url = embedded.ensure_database(server_uri, DATABASE, recreate=True)
    if not redis_url:
        base = embedded.EmbeddedRedis(data_dir / "redis").start()
        redis_url = base.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    migrate.upgrade(database_url)
    return database_url, redis_url


def seed(engine: Engine, first: int, count: int) -> int:
    """A campaign with ``count`` Sent contacts numbered from ``first`` (wamid.bench.<i>)."""
    with engine.begin() as conn:
        campaign_id = conn.execute(
            text(
                "INSERT INTO campaigns (name, template_name, default_region, status) "
                "VALUES ('bench webhooks', 'bf_offer', 'DE', 'running') RETURNING id"
            )
        ).scalar_one()
        upload_id = conn.execute(
            text(
                "INSERT INTO uploads (campaign_id, filename, spool_path, size_bytes, status) "
                "VALUES (:c, 'bench.csv', '-', 0, 'completed') RETURNING id"
            ),
            {"c": campaign_id},
        ).scalar_one()
        conn.execute(
            text(
                """
                INSERT INTO contacts (campaign_id, upload_id, line_no, phone_raw, phone_e164,
                    wa_id, state, wamid, attempt_id, attempts, in_progress_at)
                SELECT :c, :u, g, '+49151' || lpad(g::text, 8, '0'),
                       '+49151' || lpad(g::text, 8, '0'), '49151' || lpad(g::text, 8, '0'),
                       'sent', 'wamid.bench.' || g, md5(g::text)::uuid, 1, now()
                FROM generate_series(CAST(:first AS int), :last) AS g
                """
            ),
            {"c": campaign_id, "u": upload_id, "first": first, "last": first + count - 1},
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE contacts"))
    return int(campaign_id)


def status_json(i: int, kind: str, step: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"wamid.bench.{i}",
        "status": kind,
        "timestamp": str(TS + step),
        "recipient_id": f"49151{i:08d}",
        "biz_opaque_callback_data": attempt_of(i),
    }
    if kind == "failed":
        out["errors"] = [
            {
                "code": 131049,
                "title": "This message was not delivered to maintain healthy ecosystem engagement.",
                "error_data": {"details": "Simulated."},
            }
        ]
    else:
        out["conversation"] = {"id": "c", "origin": {"type": "marketing"}}
        out["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "marketing"}
    return out


def statuses_for(first: int, count: int, rng: random.Random) -> list[tuple[int, str, int]]:
    events = [
        (i, kind, step)
        for i in range(first, first + count)
        for step, kind in enumerate(LIFECYCLES[i % len(LIFECYCLES)])
    ]
    events += rng.sample(events, len(events) // 10)  # 10% duplicates
    rng.shuffle(events)
    return events


def bodies(events: list[tuple[int, str, int]], per_post: int) -> list[tuple[bytes, int]]:
    out = []
    for start in range(0, len(events), per_post):
        chunk = events[start : start + per_post]
        doc = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "100000000000001",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550001111",
                                    "phone_number_id": "1234",
                                },
                                "statuses": [status_json(*e) for e in chunk],
                            },
                        }
                    ],
                }
            ],
        }
        out.append((json.dumps(doc, separators=(",", ":")).encode(), len(chunk)))
    return out


async def post_all(
    url: str, payloads: list[tuple[bytes, int]], concurrency: int
) -> tuple[float, list[float]]:
    """Posts every body; returns the start time and each POST's latency in ms."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body, _ in payloads:
        queue.put_nowait(body)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                headers = {
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign_payload(body, SECRET),
                }
                began = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"POST answered {response.status_code}: {response.text}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return start, latencies


async def post_paced(
    url: str, payloads: list[tuple[bytes, int]], rate: float, max_connections: int
) -> tuple[float, list[float]]:
    """Open loop: body i is due at start + (statuses before it) / rate, whatever the answers
    to earlier ones (no coordinated omission). Latency: from the POST's start to its answer;
    how late the client started POSTs (it shares the CPU) is printed to stderr."""
    latencies: list[float] = []
    lags: list[float] = []  # how late the client itself sent (it shares the CPU)
    trace: list[tuple[float, float]] = []
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=30) as client:
        loop = asyncio.get_running_loop()
        start_loop = loop.time()
        start = time.perf_counter()

        async def one(body: bytes, due: float) -> None:
            await asyncio.sleep(max(0.0, due - loop.time()))
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign_payload(body, SECRET),
            }
            began = loop.time()
            lags.append(began - due)
            response = await client.post(url, content=body, headers=headers)
            latencies.append((loop.time() - began) * 1000)
            if os.environ.get("BENCH_TRACE"):
                trace.append((due - start_loop, (loop.time() - began) * 1000))
            if response.status_code != 200:
                raise RuntimeError(f"POST answered {response.status_code}: {response.text}")

        tasks = []
        sent = 0
        for body, count in payloads:
            tasks.append(asyncio.create_task(one(body, start_loop + sent / rate)))
            sent += count
        await asyncio.gather(*tasks)
    lags.sort()
    print(
        f"client send lag: p50 {lags[len(lags) // 2] * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms",
        file=sys.stderr,
    )
    if trace:
        per_second: dict[int, list[float]] = {}
        for at, ms in trace:
            per_second.setdefault(int(at), []).append(ms)
        for second, values in sorted(per_second.items()):
            print(second, round(max(values)), round(statistics.median(values)), file=sys.stderr)
    return start, latencies


def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM webhook_inbox WHERE status = 'pending'")
            ).scalar_one()
        )


def wait_applied(engine: Engine, timeout_s: float) -> float:
    """Polls the pending count (a benchmark's stopwatch, not production code)."""
    deadline = time.monotonic() + timeout_s
    while pending(engine):
        if time.monotonic() > deadline:
            raise TimeoutError("the inbox did not drain in time")
        time.sleep(0.05)
    return time.perf_counter()


def naive_baseline(engine: Engine, events: list[tuple[int, str, int]]) -> float:
    """One transaction and commit per status, same rules and writes; statuses per second."""
    started = time.perf_counter()
    for i, kind, step in events:
        with engine.begin() as conn:
            row = (
                conn.execute(
                    text(
                        "SELECT id, campaign_id, state, sent_at, delivered_at, read_at, failed_at "
                        "FROM contacts WHERE wamid = :w FOR UPDATE"
                    ),
                    {"w": f"wamid.bench.{i}"},
                )
                .mappings()
                .one()
            )
            before = Delivery(
                ContactState(row["state"]),
                row["sent_at"],
                row["delivered_at"],
                row["read_at"],
                row["failed_at"],
            )
            code = 131049 if kind == "failed" else None
            event = StatusEvent(StatusKind.parse(kind), stamp(step), code, None)
            after, steps = settle(before, [event])
            if after == before:
                continue
            conn.execute(
                text(
                    "UPDATE contacts SET state = :s, sent_at = :a, delivered_at = :b, "
                    "read_at = :r, failed_at = :f, error_code = :e, updated_at = now() "
                    "WHERE id = :id"
                ),
                {
                    "s": after.state.value,
                    "a": after.sent_at,
                    "b": after.delivered_at,
                    "r": after.read_at,
                    "f": after.failed_at,
                    "e": after.error_code,
                    "id": row["id"],
                },
            )
            if steps[0].from_state != steps[0].to_state:
                conn.execute(
                    text(
                        "INSERT INTO contact_events (contact_id, campaign_id, from_state, "
                        "to_state, source) VALUES (:id, :c, :f, :t, 'webhook')"
                    ),
                    {
                        "id": row["id"],
                        "c": row["campaign_id"],
                        "f": steps[0].from_state.value,
                        "t": steps[0].to_state.value,
                    },
                )
    return len(events) / (time.perf_counter() - started)


def stamp(step: int) -> datetime:
    return datetime.fromtimestamp(TS + step, tz=UTC)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument(
        "--rate",
        type=float,
        default=6_000,
        help="statuses per second offered (open loop); 0: as fast as --concurrency allows",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop: POSTs in flight")
    parser.add_argument("--per-post", type=int, default=50, help="statuses per POST body")
    parser.add_argument("--worker-concurrency", type=int, default=1)
    parser.add_argument("--apply-batch", type=int, help="WEBHOOK_APPLY_BATCH for the worker")
    parser.add_argument("--baseline-contacts", type=int, default=2_000)
    args = parser.parse_args()

    data_dir = Path(os.environ.get("DATA_DIR", ROOT / ".data")).resolve()
    configured = {"postgres": "DATABASE_URL", "redis": "REDIS_URL"}
    ours = {s for s, var in configured.items() if not os.environ.get(var)}
    ours -= embedded.running(data_dir)  # already running: not ours to stop
    try:
        run(args, data_dir)
    finally:
        embedded.down(data_dir, only=ours)


def run(args: argparse.Namespace, data_dir: Path) -> None:
    database_url, redis_url = services(data_dir)
    engine = create_engine(database_url, pool_size=2)
    rng = random.Random(7)
    seed(engine, 1, args.contacts)
    events = statuses_for(1, args.contacts, rng)
    payloads = bodies(events, args.per_post)

    port = embedded.free_port()
    cli = str(Path(sys.executable).parent / "wa-campaigns")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "WHATSAPP_APP_SECRET": SECRET,
        "DATA_DIR": str(data_dir),
    }
    if args.apply_batch:
        env["WEBHOOK_APPLY_BATCH"] = str(args.apply_batch)
    logs = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    with Supervisor(logs, env=env, stop_timeout_s=30.0) as processes:
        server = processes.start("serve", [cli, "serve", "--port", str(port)])
        worker = processes.start(
            "worker",
            [
                "nice",
                "-n",
                "10",
                cli,
                "worker",
                "-Q",
                "webhooks",
                "-c",
                str(args.worker_concurrency),
            ],
        )
        base = f"http://127.0.0.1:{port}"
        embedded.wait_until(
            lambda: _healthy(base), timeout_s=60, what="the HTTP service (wa-campaigns serve)"
        )
        # Warm-up: empty envelopes (nothing to apply) for about two seconds at the POST
        # rate of the run, so connections and code paths are warm; the worker applying
        # them proves the whole path is up.
        empty = b'{"object":"whatsapp_business_account","entry":[]}'
        rate_posts = args.rate / args.per_post if args.rate else 100.0
        warm = [(empty, 1)] * max(1, int(2 * rate_posts))
        asyncio.run(post_paced(f"{base}/webhooks/whatsapp", warm, rate_posts, 256))
        wait_applied(engine, 120)

        url = f"{base}/webhooks/whatsapp"
        start, latencies = asyncio.run(
            post_paced(url, payloads, args.rate, 256)
            if args.rate
            else post_all(url, payloads, args.concurrency)
        )
        posted = time.perf_counter()
        done = wait_applied(engine, 600)
        cpu = {
            "server": round(cpu_seconds(server.pid), 1),
            "worker": round(cpu_seconds(worker.pid), 1),
            "postgres": round(backend_cpu_seconds(engine), 1),
            "bench_client": round(time.process_time(), 1),
        }
    with engine.connect() as conn:
        states = dict(
            conn.execute(
                text("SELECT state, count(*) FROM contacts GROUP BY state ORDER BY state")
            ).all()
        )
        applied = conn.execute(
            text("SELECT coalesce(sum(statuses), 0) FROM webhook_inbox WHERE status = 'applied'")
        ).scalar_one()
    expected: dict[str, int] = {}
    for i in range(1, args.contacts + 1):
        final = FINAL[LIFECYCLES[i % len(LIFECYCLES)][-1]]
        expected[final] = expected.get(final, 0) + 1

    first_baseline = args.contacts + 1
    seed(engine, first_baseline, args.baseline_contacts)
    baseline = naive_baseline(
        engine, statuses_for(first_baseline, args.baseline_contacts, random.Random(8))
    )

    latencies.sort()
    elapsed = done - start
    print(
        json.dumps(
            {
                "events": len(events),
                "applied_per_s": round(len(events) / elapsed),
                "p50_ms": round(statistics.median(latencies), 1),
                "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1),
                "baseline_naive_per_s": round(baseline),
                "offered_per_s": args.rate or None,
                "posts": len(payloads),
                "posts_per_s": round(len(payloads) / (posted - start)),
                "post_phase_s": round(posted - start, 2),
                "drain_after_posts_s": round(done - posted, 2),
                "contacts": args.contacts,
                "cpu_s": cpu,
                "states_ok": states == expected and applied == len(events),
                "states": states,
                "logs": str(logs),
            }
        )
    )


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (the worker's pool processes)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def backend_cpu_seconds(engine: Engine) -> float:
    """CPU time of the Postgres backends serving this database (receiver and applier)."""
    with engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        return sum(cpu_seconds(int(pid)) for pid in pids)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
