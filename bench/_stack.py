"""Shared set-up of the dispatch benchmarks: a private stack started and stopped by the run.

``Stack`` starts embedded Postgres and Redis under its own ``DATA_DIR`` in /tmp (never the
caller's ``DATABASE_URL`` / ``REDIS_URL``), runs the migrations, and starts the simulator and
Celery workers as subprocesses in their own sessions. Leaving the ``with`` block (normally,
on an error or on Ctrl-C) kills every process group it started, stops the embedded
services and removes the data dir (``keep=True`` leaves the data dir for a post-mortem).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# The project first, before this folder (the script's own): bench/campaigns.py must never
# shadow the campaigns package, even when ROOT is already on the path further down.
if str(ROOT) in sys.path:
    sys.path.remove(str(ROOT))
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, text  # noqa: E402

from campaigns.dev.processes import Child, Supervisor, cli_argv  # noqa: E402

SIM_TOKEN = "sim-token"
DEFAULT_SENDER = "555"
PENDING = ("initial", "in_progress", "retry_scheduled")


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the final JSON line."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class Stack:
    def __init__(self, name: str, *, keep: bool = False) -> None:
        self.name = name
        self.keep = keep
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"wa-bench-{name}-"))
        # Every process of the run, in its own process group: stopped as one at the end.
        self.supervisor = Supervisor(self.data_dir, cwd=ROOT, stop_timeout_s=10.0)
        self.sim_url = ""
        self.database_url = ""
        self.redis_url = ""
        self._services_up = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        # SIGTERM (`timeout`, a CI job cancelled) leaves the with-block like Ctrl-C does, so
        # the workers, simulator, Postgres and Redis of this run are stopped, not orphaned.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self._up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _up(self) -> None:
        os.environ["DATA_DIR"] = str(self.data_dir)
        for key in ("DATABASE_URL", "REDIS_URL"):
            os.environ.pop(key, None)
        os.environ.setdefault("WHATSAPP_TOKEN", SIM_TOKEN)
        os.environ.setdefault("WHATSAPP_PHONE_NUMBER_ID", DEFAULT_SENDER)
        from campaigns.runtime import embedded
        from campaigns.runtime import stores as runtime
        from campaigns.storage import migrate

        runtime.reset()
        log(f"embedded Postgres + Redis under {self.data_dir}")
        self._services_up = True
        stores = embedded.up(self.data_dir)
        self.database_url, self.redis_url = (
            stores.database_url,
            stores.redis_url,
        )
        migrate.upgrade(self.database_url)
        os.environ["DATABASE_URL"] = self.database_url
        os.environ["REDIS_URL"] = self.redis_url
        runtime.reset()

    def close(self) -> None:
        self.supervisor.stop_all()
        if self._services_up:
            from campaigns.runtime import embedded

            with contextlib.suppress(Exception):
                embedded.down(self.data_dir)
            self._services_up = False
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        else:
            log(f"kept {self.data_dir}")

    def stop(self, name: str) -> None:
        self.supervisor.stop(name)

    @property
    def procs(self) -> list[Child]:
        return self.supervisor.children

    # ------------------------------------------------------------------ processes

    @property
    def engine(self) -> Engine:
        from campaigns.runtime.stores import resolve

        return resolve().engine

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> Child:
        return self.supervisor.start(name, argv, env=env, cwd=cwd)

    def start_simulator(
        self,
        *,
        rate: float | None = None,
        demo: bool = False,
        webhook_url: str | None = None,
        app_secret: str | None = None,
        settings: Mapping[str, object] | None = None,
    ) -> str:
        """The simulator; ``demo``: its failure mix; ``webhook_url``/``app_secret``: signed
        status webhooks to our receiver; ``settings``: ``--set KEY=JSON`` values."""
        from campaigns.runtime.embedded import free_port

        port = free_port()
        argv = [sys.executable, "-m", "campaigns.dev.simulator", "--port", str(port)]
        argv += ["--pair-interval", "0", "--token", SIM_TOKEN]
        if rate is not None:
            argv += ["--rate", str(rate)]
        if demo:
            argv += ["--demo"]
        if webhook_url and app_secret:
            argv += ["--webhook-url", webhook_url, "--app-secret", app_secret]
        for key, value in (settings or {}).items():
            argv += ["--set", f"{key}={json.dumps(value)}"]
        proc = self.spawn("simulator", argv)
        self.sim_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if self.sim_get("/_sim/health").get("ok"):
                    break
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start: {proc.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        os.environ["WHATSAPP_API_URL"] = self.sim_url
        return self.sim_url

    def start_dispatch_worker(self, *, concurrency: int = 2, beat: bool = True) -> Child:
        """``wa-campaigns worker -Q dispatch --beat -c 2`` exactly as the CLI runs it."""
        from campaigns.cli.ops import worker_argv

        argv = worker_argv("dispatch", concurrency, hostname=f"dispatch@{self.name}", beat=beat)
        proc = self.spawn("dispatch-worker", argv)
        self.wait_ready(proc)
        return proc

    def start_worker(self, name: str, queues: str, *, concurrency: int, beat: bool) -> Child:
        """``wa-campaigns worker -Q queues`` as the CLI runs it, in its own process group."""
        from campaigns.cli.ops import worker_argv

        argv = worker_argv(queues, concurrency, hostname=f"{name}@{self.name}", beat=beat)
        proc = self.spawn(name, argv)
        self.wait_ready(proc)
        return proc

    def start_api(self) -> str:
        """``wa-campaigns serve`` (the webhook receiver); its base URL once healthy."""
        from campaigns.runtime.embedded import free_port

        port = free_port()
        proc = self.spawn("api", cli_argv("serve", "--port", str(port)))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            healthz = base + "/healthz"
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(healthz, timeout=2) as answer,  # noqa: S310
            ):
                if answer.status == 200:
                    return base
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start: {proc.log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def wait_ready(self, proc: Child, *, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while b" ready." not in proc.log_path.read_bytes():
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                tail = proc.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{proc.name} did not become ready:\n{tail}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ simulator

    def sim_get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.sim_url + path, timeout=10) as response:  # noqa: S310
            data: dict[str, Any] = json.loads(response.read())
        return data

    def sim_post(self, path: str) -> dict[str, Any]:
        url = self.sim_url + path
        request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            data: dict[str, Any] = json.loads(response.read())
        return data

    def sim_config(self, **updates: object) -> dict[str, Any]:
        """Runtime changes of the simulator (``POST /_sim/config``)."""
        url = self.sim_url + "/_sim/config"
        body = json.dumps(updates).encode()
        request = urllib.request.Request(  # noqa: S310
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            data: dict[str, Any] = json.loads(response.read())
        return data

    def sim_stats(self) -> dict[str, Any]:
        """Counters without the per-recipient map (cheap enough to poll)."""
        return self.sim_get("/_sim/stats?by_recipient=0")

    def sim_accepted(self) -> int:
        return int(self.sim_stats()["accepted_total"])

    # ------------------------------------------------------------------ data

    def campaign_with_contacts(
        self,
        contacts: int,
        *,
        rate: float,
        number_base: int,
        sender: str = DEFAULT_SENDER,
        name: str = "bench",
    ) -> int:
        """A draft campaign with ``contacts`` Initial contacts inserted in SQL (no CSV).

        Phones are ``+4915`` + 9 digits from ``number_base`` on: give each campaign of a run
        its own range so the simulator's per-recipient counts stay per contact.
        """
        from campaigns.services import campaigns as campaign_service
        from schemas.api import CampaignCreate

        engine = self.engine
        body = CampaignCreate(
            name=name,
            template="bf_offer",
            region="DE",
            body_variables=["first_name", "code"],
            phone_number_id=sender,
            rate_per_s=Decimal(str(min(rate, 1000.0))),
        )
        campaign_id = campaign_service.create_campaign(engine, body).id
        with engine.begin() as conn:
            if rate > 1000.0:  # above what the API allows: capacity measurements only
                conn.execute(
                    text("UPDATE campaigns SET rate_per_s = :r WHERE id = :c"),
                    {"r": rate, "c": campaign_id},
                )
            upload_id = conn.execute(
                text(
                    "INSERT INTO uploads (campaign_id, filename, spool_path, size_bytes, status,"
                    " rows_read, valid_rows) VALUES (:c, 'bench.csv', '', 0, 'completed', :n, :n)"
                    " RETURNING id"
                ),
                {"c": campaign_id, "n": contacts},
            ).scalar_one()
            # As an upload leaves them: each contact linked to its person in the registry
            # (people are keyed by the E.164 digits).
            numbers = (
                "FROM generate_series(1, :n) AS g,"
                " LATERAL (SELECT '+4915' || lpad((:base + g)::text, 9, '0') AS p) AS x"
            )
            numbering = {"n": contacts, "base": number_base}
            conn.execute(
                text(
                    "INSERT INTO people (id, phone_e164) SELECT CAST(substr(p, 2) AS bigint), p "
                    + numbers
                    + " ON CONFLICT (id) DO NOTHING"
                ),
                numbering,
            )
            conn.execute(
                text(
                    "INSERT INTO contacts (campaign_id, upload_id, line_no, phone_raw, phone_e164,"
                    " variables, state, person_id) "
                    "SELECT :c, :u, g, p, p, jsonb_build_object('first_name', 'Anna',"
                    " 'code', 'BF' || lpad(g::text, 7, '0')), 'initial',"
                    " CAST(substr(p, 2) AS bigint) " + numbers
                ),
                {"c": campaign_id, "u": upload_id} | numbering,
            )
        with engine.connect() as conn:
            autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
            autocommit.execute(text("ANALYZE contacts"))
            autocommit.execute(text("ANALYZE people"))
        return campaign_id

    def send_starts(self, campaign_id: int) -> list[float]:
        """Unix times of the campaign's start marks (the send ledger: when each message's
        group passed the start statement, right before it left), sorted."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT extract(epoch FROM send_started_at) FROM contacts"
                    " WHERE campaign_id = :c AND send_started_at IS NOT NULL"
                    " ORDER BY send_started_at"
                ),
                {"c": campaign_id},
            ).scalars()
            return [float(t) for t in rows]

    def counts(self, campaign_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT state, count(*) FROM contacts WHERE campaign_id = :c GROUP BY state"),
                {"c": campaign_id},
            )
            return {str(s): int(n) for s, n in rows}

    def campaign_status(self, campaign_id: int) -> str:
        with self.engine.connect() as conn:
            return str(
                conn.execute(
                    text("SELECT status FROM campaigns WHERE id = :c"), {"c": campaign_id}
                ).scalar_one()
            )

    def flags(self) -> Any:
        import redis

        from campaigns.clients.send_gate import SyncPauseFlags

        return SyncPauseFlags(redis.Redis.from_url(self.redis_url))


def machine_load() -> float:
    """1-minute load average when the run started (the machine is shared: context only)."""
    return round(os.getloadavg()[0], 2)


def _tree_cpu_s(pid: int) -> float:
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    """CPU seconds so far per component (process trees); diff two snapshots for a phase."""
    from campaigns.runtime.embedded import EmbeddedRedis

    out = {proc.name: _tree_cpu_s(proc.popen.pid) for proc in stack.procs}
    pg_pid = stack.data_dir / "pg" / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        out["postgres"] = _tree_cpu_s(int(pg_pid.read_text().splitlines()[0]))
    redis_pid = EmbeddedRedis(stack.data_dir / "redis").running_pid()
    if redis_pid is not None:
        out["redis"] = _tree_cpu_s(redis_pid)
    own = os.times()
    out["bench"] = own.user + own.system  # this process only (its children are listed above)
    return out


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 1) for k in after}


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, any process)."""
    import psutil

    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def telemetry(stack: Stack, campaign_id: int) -> dict[str, Any]:
    """The workers' own counters (Redis): limiter waits and accepted sends per second."""
    import statistics

    import redis

    from campaigns.clients.telemetry import RATE_TTL_S, rate_series, read_snapshot

    client = redis.Redis.from_url(stack.redis_url)
    snap = read_snapshot(client)
    series = [n for _, n in rate_series(client, campaign_id, seconds=RATE_TTL_S)]
    while series and series[0] == 0:
        series.pop(0)
    while series and series[-1] == 0:
        series.pop()
    out: dict[str, Any] = {
        "limiter_waits": snap.limiter_waits,
        "limiter_wait_avg_ms": round(1000 * snap.limiter_wait_s / max(1, snap.limiter_waits), 1),
    }
    if len(series) >= 3:
        inner = series[1:-1]  # first and last seconds are partial
        deciles = statistics.quantiles(inner, n=10) if len(inner) >= 2 else inner * 9
        out["per_second_p10_p50_p90"] = [round(deciles[0]), round(deciles[4]), round(deciles[8])]
    return out


def middle_rate(times: Sequence[float], share: float = 0.9) -> float:
    """Sends per second over the middle ``share`` of sorted send times (the ramp-up and the
    tail left out)."""
    n = len(times)
    if n < 20:
        return 0.0
    lo = int(n * (1 - share) / 2)
    hi = n - 1 - lo
    span = times[hi] - times[lo]
    return (hi - lo) / span if span > 0 else 0.0
