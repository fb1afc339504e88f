"""The README's main job: a demo campaign end to end on the embedded campaign_service.

Starts (as separate processes, as in production) the simulator, the HTTP service, an ingest
worker and a dispatch+webhooks worker with the beat tick; uploads the bundled CSV, starts the
campaign, shows progress per state, and ends with the final counts and what the simulator
accepted (proof that nobody got two messages). The embedded stores it had to start are
stopped at the end (kept when asked, with a word on how to stop them).
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis

from campaigns.clients.send_gate import SyncPauseFlags
from campaigns.dev import sample_data
from campaigns.dev.processes import Child, Supervisor, cli_argv
from campaigns.runtime import embedded
from campaigns.runtime.config import Settings, get_settings
from campaigns.runtime.embedded import free_port
from campaigns.runtime.stores import Runtime, resolve
from campaigns.services import admin, uploads
from campaigns.services import campaigns as campaign_service
from schemas.api import CampaignCreate

SETTLED_STATES = ("initial", "in_progress", "retry_scheduled", "sent")

Say = Callable[[str], None]


def _wait_http(url: str, proc: Child, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{what} exited early (see {proc.log_path})")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        tick.wait(0.2)
    raise RuntimeError(f"{what} did not answer within {timeout} s")


def run_demo(
    *, contacts: int, as_json: bool, rate: float = 250.0, keep_stores: bool = False
) -> int:
    """The demo; the embedded stores it had to start are stopped at the end unless
    ``keep_stores`` (stores already running, or configured by URL, are left as they were)."""
    started = time.monotonic()

    def say(message: str) -> None:
        if not as_json:
            print(message, file=sys.stderr, flush=True)

    settings = get_settings()
    ours = _stores_it_starts(settings)
    runtime: Runtime | None = None
    try:
        runtime = resolve()
        summary, dashboard = _run_stack(runtime, contacts, rate, say)
    finally:
        if runtime is not None:
            runtime.engine.dispose()  # its pooled connections go before their server does
        _leave_stores(settings.data_dir, ours, keep=keep_stores, say=say)
    summary["seconds"] = round(time.monotonic() - started, 1)
    if as_json:
        print(json.dumps(summary))
    else:
        print(json.dumps(summary, indent=2))
        print(f"dashboard (while a stack runs): {dashboard}", file=sys.stderr)
    return 0 if summary["status"] == "completed" and summary["simulator_duplicates"] == 0 else 1


def _stores_it_starts(settings: Settings) -> set[str]:
    """The embedded stores that resolving the runtime is about to start for this demo."""
    wanted = {
        name
        for name, url in (("postgres", settings.database_url), ("redis", settings.redis_url))
        if not url
    }
    return wanted - embedded.running(settings.data_dir)


def _leave_stores(data_dir: Path, ours: set[str], *, keep: bool, say: Say) -> None:
    if not ours:
        return
    if keep:
        # Said even with --json (on stderr): servers left running must never be a surprise.
        print(
            f"left running: embedded {' and '.join(sorted(ours))} under {data_dir.resolve()}; "
            "stop them with `wa-campaigns dev down`",
            file=sys.stderr,
            flush=True,
        )
        return
    stopped = embedded.down(data_dir, only=ours)
    say(f"stopped the stores the demo started: {', '.join(stopped) or 'none'}")


def _run_stack(
    runtime: Runtime, contacts: int, rate: float, say: Say
) -> tuple[dict[str, Any], str]:
    """The demo's processes around one campaign; returns its summary and the dashboard URL."""
    settings = runtime.settings
    if contacts == 10_000 and sample_data.EXAMPLE_CSV.exists():
        csv_path = sample_data.EXAMPLE_CSV
    else:
        csv_path = sample_data.write_csv(
            settings.data_dir / "demo" / f"contacts-{contacts}.csv", contacts
        )
    log_dir = (settings.data_dir / "demo" / "logs").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    api_port, sim_port = free_port(8000), free_port(8900)
    app_secret = secrets.token_hex(16)
    api_token = "demo-" + secrets.token_hex(12)
    env = {
        "DATABASE_URL": runtime.database_url,
        "REDIS_URL": runtime.redis_url,
        "WHATSAPP_API_URL": f"http://127.0.0.1:{sim_port}",
        "WHATSAPP_TOKEN": "sim-token",
        "WHATSAPP_PHONE_NUMBER_ID": "100200300",
        "WHATSAPP_APP_SECRET": app_secret,
        "WHATSAPP_VERIFY_TOKEN": secrets.token_hex(8),
        "API_TOKENS": api_token,
    }
    say(f"postgres: {runtime.database_url}\nredis:    {runtime.redis_url}\nlogs:     {log_dir}")
    sim_url = f"http://127.0.0.1:{sim_port}"
    api_url = f"http://127.0.0.1:{api_port}"
    with Supervisor(log_dir, env=env, stop_timeout_s=20.0) as children:
        simulator = children.start("simulator", _simulator_argv(sim_port, api_url, app_secret))
        api = children.start("api", cli_argv("serve", "--port", str(api_port)))
        children.start("worker-ingest", cli_argv("worker", "-Q", "ingest", "-c", "1"))
        # One worker per queue, as in compose: webhook drains never hold dispatch's slots.
        children.start("worker-dispatch", cli_argv("worker", "-Q", "dispatch", "-c", "2", "--beat"))
        children.start("worker-webhooks", cli_argv("worker", "-Q", "webhooks", "-c", "1"))
        _wait_http(f"{sim_url}/_sim/stats", simulator, "the simulator")
        _wait_http(f"{api_url}/healthz", api, "the HTTP service")
        say(f"simulator {sim_url}   API {api_url}/docs")
        summary = _run_campaign(runtime, csv_path, rate, sim_url, say)
    return summary, f"{api_url}/dashboard?token={api_token}"


def _simulator_argv(port: int, api_url: str, app_secret: str) -> list[str]:
    return cli_argv(
        "simulator",
        "--port",
        str(port),
        "--demo",
        # The number's tier: 1,000 msg/s, so the campaign's own rate is what paces it.
        "--rate",
        "1000",
        "--pair-interval",
        "0",
        "--webhook-url",
        f"{api_url}/webhooks/whatsapp",
        "--app-secret",
        app_secret,
    )


def _run_campaign(
    runtime: Runtime, csv_path: Path, rate: float, sim_url: str, say: Say
) -> dict[str, Any]:
    engine = runtime.engine
    campaign = campaign_service.create_campaign(
        engine,
        CampaignCreate(
            name="Black Friday demo",
            template="bf_offer",
            language="en",
            region="DE",
            body_variables=["first_name", "code"],
            rate_per_s=Decimal(str(rate)),
        ),
    )
    say(f"campaign {campaign.id} created; uploading {csv_path.name}")
    with csv_path.open("rb") as handle:
        spooled = uploads.spool_upload(
            iter(lambda: handle.read(1 << 20), b""),
            runtime.settings.spool_dir,
            max_bytes=runtime.settings.max_upload_bytes,
        )
    upload = uploads.register_upload(engine, campaign.id, spooled, filename=csv_path.name)
    from workers.dispatch import wake_dispatch
    from workers.ingest import ingest_upload

    ingest_upload.delay(upload.id)
    for upload in uploads.follow_upload(engine, runtime.redis_url, upload.id):  # noqa: B020
        say(
            f"  upload {upload.id}: {upload.status:<10} rows {upload.rows_read:>7,}  "
            f"valid {upload.valid:>7,}  invalid {upload.invalid:>6,}"
        )
    flags = SyncPauseFlags(redis.Redis.from_url(runtime.redis_url))
    admin.start_campaign(engine, flags, campaign.id)
    wake_dispatch()
    say(f"campaign {campaign.id} started at {rate:g} msg/s")
    tick = threading.Event()
    deadline = time.monotonic() + 600
    while True:
        current = campaign_service.get_campaign(engine, campaign.id)
        shown = "  ".join(f"{s} {n:,}" for s, n in current.counts.items() if n)
        say(f"  {current.status.value:<9} {shown}")
        stats = httpx.get(f"{sim_url}/_sim/stats", params={"by_recipient": "0"}).json()
        waiting = sum(current.counts[s] for s in SETTLED_STATES)
        if current.status.value == "completed" and waiting == 0:
            break
        if time.monotonic() > deadline:
            say("  gave up waiting after 10 minutes")
            break
        tick.wait(1.0)
    return {
        "campaign_id": campaign.id,
        "status": current.status.value,
        "upload": {"rows": upload.rows_read, "valid": upload.valid, "invalid": upload.invalid},
        "counts": {state: n for state, n in current.counts.items() if n},
        "simulator_accepted": stats["accepted_total"],
        "simulator_duplicates": stats["duplicate_count"],
    }
