"""Shared set-up for dispatch tests: campaigns with contacts, and the send ports on a loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from sqlalchemy import Engine, text

from campaigns.clients.ratelimit import PauseFlags, RateLimiter
from campaigns.clients.send_gate import RedisSendGate, SyncPauseFlags
from campaigns.clients.whatsapp import CloudApiTransport, WhatsAppClient
from campaigns.dev.simulator.runner import RunningSimulator
from campaigns.domain.dispatch import CHAIN_S, CampaignPlan, ClaimedContact, Starts
from campaigns.runtime.stores import resolve
from campaigns.services import campaigns as campaign_service
from campaigns.services import uploads
from campaigns.services.dispatch.batch import BatchReport
from campaigns.services.dispatch.chain import run_chain
from campaigns.services.dispatch.ledger import StartLedger
from campaigns.services.dispatch.recorder import Recorder
from campaigns.services.dispatch.send import Sender
from campaigns.storage import dispatch as dispatch_db
from schemas.api import CampaignCreate

T = TypeVar("T")
SENDER = "100200300"


def phone(n: int) -> str:
    """Distinct valid German mobiles; the last two digits pick the simulator's outcome."""
    return f"+49151{20000000 + n:08d}"


def csv_for(numbers: Sequence[str]) -> bytes:
    lines = ["phone,name"] + [f"{p},Name {i}" for i, p in enumerate(numbers)]
    return ("\n".join(lines) + "\n").encode()


def campaign_with_contacts(
    engine: Engine,
    numbers: Sequence[str],
    *,
    template: str = "bf_offer",
    rate: float = 1000,
    max_attempts: int = 5,
    **extra: Any,
) -> int:
    body = CampaignCreate(
        name="dispatch",
        template=template,
        region="DE",
        body_variables=["name"],
        phone_number_id=SENDER,
        rate_per_s=Decimal(str(rate)),
        max_attempts=max_attempts,
        **extra,
    )
    campaign_id = campaign_service.create_campaign(engine, body).id
    settings = resolve().settings
    spooled = uploads.spool_upload(
        iter([csv_for(numbers)]), settings.spool_dir, max_bytes=50_000_000
    )
    upload = uploads.register_upload(engine, campaign_id, spooled, filename="c.csv")
    done = uploads.run_ingest(
        engine, upload.id, max_rows=1_000_000, chunk_rows=10_000, parse_workers=1
    )
    assert done.valid == len(numbers), done
    return campaign_id


def states(engine: Engine, campaign_id: int) -> dict[str, str]:
    """phone -> state of every contact of the campaign."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT phone_e164, state FROM contacts WHERE campaign_id = :c"),
            {"c": campaign_id},
        )
        return {str(p): str(s) for p, s in rows}


def counts(engine: Engine, campaign_id: int) -> dict[str, int]:
    """state -> number of contacts of the campaign."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT state, count(*) FROM contacts WHERE campaign_id = :c GROUP BY state"),
            {"c": campaign_id},
        )
        return {str(state): int(n) for state, n in rows}


def campaign_status(engine: Engine, campaign_id: int) -> tuple[str, str | None]:
    """The campaign's status and status_reason."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, status_reason FROM campaigns WHERE id = :c"), {"c": campaign_id}
        ).one()
        return str(row.status), row.status_reason


def contact_rows(engine: Engine, campaign_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM contacts WHERE campaign_id = :c ORDER BY id"), {"c": campaign_id}
        ).mappings()
        return [dict(r) for r in rows]


def start_committed(engine: Engine, claimed: Sequence[ClaimedContact]) -> Starts:
    """The send ledger's start statement for these claims, as dispatch runs it (its own
    connection, committed synchronously)."""

    async def start() -> Starts:
        statements = dispatch_db.StartStatements(engine)
        try:
            return await statements.start([(c.id, c.attempt_id) for c in claimed])
        finally:
            await statements.close()

    return asyncio.run(start())


def sync_flags() -> SyncPauseFlags:
    return SyncPauseFlags(redis.Redis.from_url(resolve().redis_url))


class SendPorts:
    """The real gate (Redis) and transport (httpx to the simulator) on a private loop."""

    def __init__(self, sim: RunningSimulator, *, timeout_s: float = 5.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.redis = aioredis.Redis.from_url(resolve().redis_url)
        self.gate = RedisSendGate(self.redis, RateLimiter(self.redis), PauseFlags(self.redis))
        self.client = WhatsAppClient(timeout_s=timeout_s, max_connections=100)
        self.transport = CloudApiTransport(
            self.client,
            base_url=sim.base_url,
            api_version=sim.config.api_version,
            token=sim.config.access_token,
        )

    def run(self, awaitable: Awaitable[T]) -> T:
        async def _await() -> T:
            return await awaitable

        return self.loop.run_until_complete(_await())

    def close(self) -> None:
        self.run(self.client.aclose())
        self.run(self.redis.aclose())
        self.loop.close()


def chain(
    engine: Engine,
    campaign_id: int,
    ports: SendPorts,
    *,
    max_s: float = CHAIN_S,
    reports: list[BatchReport] | None = None,
) -> bool:
    """A dispatch chain (``run_chain``, the production path) on the ports' loop; whether more
    is due now. ``max_s=0``: one batch. ``reports`` gets each batch's report."""

    async def after(report: BatchReport) -> None:
        assert reports is not None
        reports.append(report)

    return ports.run(
        run_chain(
            engine,
            campaign_id,
            ports.gate,
            ports.transport,
            default_sender=SENDER,
            max_s=max_s,
            after_batch=after if reports is not None else None,
        )
    )


@contextmanager
def send_ports(sim: RunningSimulator, **kw: Any) -> Iterator[SendPorts]:
    ports = SendPorts(sim, **kw)
    try:
        yield ports
    finally:
        ports.close()


def send_claimed(
    engine: Engine,
    plan: CampaignPlan,
    claimed: Sequence[ClaimedContact],
    ports: SendPorts,
    *,
    tier: tuple[int, float] = (0, 86_400.0),
) -> list[BatchReport]:
    """A claimed batch through the production sender (gate, start ledger, recorder) until
    every answer is recorded; the recorder's reports."""
    reports: list[BatchReport] = []

    async def main() -> None:
        async def keep(report: BatchReport) -> None:
            reports.append(report)

        recorder = Recorder(engine, on_report=keep, tier_limit=tier[0], tier_window_s=tier[1])
        ledger = StartLedger(engine)
        sender = Sender(plan, ports.gate, ports.transport, ledger, recorder)
        await sender.send_batch(claimed)
        await sender.finish()
        await recorder.drain()
        await ledger.close()

    ports.run(main())
    return reports
