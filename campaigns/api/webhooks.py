"""The WhatsApp webhook receiver (signed by the platform, no bearer token) and its report.

``POST /webhooks/whatsapp`` does the least it can before answering: check the signature,
store the raw body, queue the applier. A slow endpoint makes the platform back off and
delays every status of the app, so the parsing and applying happen on the ``webhooks``
queue. The applier is queued at most once per ``WEBHOOK_KICK_DEBOUNCE_MS`` (a Redis
``SET NX PX`` key), so 100 POSTs a second do not become 100 tasks a second; the task runs
when the window closes, after every body stored inside it, and the beat sweep covers a
kick lost to a Redis outage.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from typing import Annotated

import redis
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from campaigns.api.deps import EngineDep, RuntimeDep, require_token
from campaigns.clients import redis_keys
from campaigns.domain.refusals import Refusal, RefusalKind
from campaigns.runtime.stores import Runtime
from campaigns.services.webhooks import receive as webhooks_in
from campaigns.services.webhooks import report as webhooks_report
from schemas.api import MAX_ID, Problem
from schemas.whatsapp import SIGNATURE_HEADER

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])
_operators = APIRouter(tags=["webhooks"], dependencies=[Depends(require_token)])

PATH = "/webhooks/whatsapp"
APPLY_TASK = "workers.webhooks.apply_inbox"
KICK_MARGIN_S = 0.05
# Platform bodies are a few KB to a few hundred KB; anything far larger is not one of them
# and is refused before it is buffered (the signature cannot be checked before the end).
MAX_BODY_BYTES = 4 * 1024 * 1024


@router.get(
    PATH,
    response_class=PlainTextResponse,
    summary="Webhook subscription handshake (hub.challenge echoed for the right verify token)",
    responses={403: {"model": Problem, "description": "wrong or missing verify token"}},
)
def verify_subscription(
    runtime: RuntimeDep,
    mode: Annotated[str | None, Query(alias="hub.mode")] = None,
    verify_token: Annotated[str | None, Query(alias="hub.verify_token")] = None,
    challenge: Annotated[str | None, Query(alias="hub.challenge")] = None,
) -> PlainTextResponse:
    expected = runtime.settings.whatsapp_verify_token.get_secret_value()
    given = verify_token or ""
    if (
        mode == "subscribe"
        and expected
        and secrets.compare_digest(given.encode(), expected.encode())
        and challenge is not None
    ):
        return PlainTextResponse(challenge)
    raise Refusal(
        "subscription_refused",
        "a handshake needs hub.mode=subscribe, the configured hub.verify_token and hub.challenge",
        kind=RefusalKind.FORBIDDEN,
    )


@router.post(
    PATH,
    summary="Status and message webhooks: signature checked, stored raw, applied by a worker",
    responses={
        401: {"model": Problem, "description": "no X-Hub-Signature-256 header"},
        403: {"model": Problem, "description": "the signature does not match the body"},
        413: {"model": Problem, "description": "body larger than any platform webhook"},
        503: {"model": Problem, "description": "WHATSAPP_APP_SECRET is not configured"},
    },
)
async def receive_webhook(request: Request, runtime: RuntimeDep) -> JSONResponse:
    try:  # refused POSTs never wait for (or reach) the database
        body = await _read_body(request)
        webhooks_in.verify_webhook(
            body,
            request.headers.get(SIGNATURE_HEADER),
            runtime.settings.whatsapp_app_secret.get_secret_value(),
        )
    except webhooks_in.WebhookRefused as exc:
        log.warning("webhook refused: %s", exc.message)
        raise
    received = await _receipts(request, runtime).submit(body)
    return JSONResponse({"status": received.status})


async def _read_body(request: Request) -> bytes:
    """The raw body, refused as soon as it is larger than any platform webhook."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise webhooks_in.BodyTooLarge(MAX_BODY_BYTES)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise webhooks_in.BodyTooLarge(MAX_BODY_BYTES)
        chunks.append(chunk)
    return b"".join(chunks)


Post = tuple[bytes, "asyncio.Future[webhooks_in.Received]"]


class _Receipts:
    """Group commit for the receiver: POSTs that arrive while a commit is under way are
    stored together by the next one (one INSERT, one WAL flush, one kick).

    ``WRITERS`` transactions at most run at a time, below the engine's pool size, so a burst
    of POSTs never opens (and closes) connections beyond the pool. A POST is answered only
    after the commit that holds its body.
    """

    WRITERS = 2
    MAX_BATCH = 64

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Post] = asyncio.Queue()
        self._writers = [self._loop.create_task(self._write()) for _ in range(self.WRITERS)]

    def usable_in(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Bound to this loop and its writers alive (a test client may start a new loop)."""
        return self._loop is loop and not any(w.done() for w in self._writers)

    async def submit(self, verified_body: bytes) -> webhooks_in.Received:
        done: asyncio.Future[webhooks_in.Received] = self._loop.create_future()
        self._queue.put_nowait((verified_body, done))
        return await done

    async def _write(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await run_in_threadpool(
                    _store_and_kick, self._runtime, [body for body, _ in batch]
                )
            except Exception as exc:  # the platform gets a 500 and sends the body again
                log.exception("could not store %d webhook bodies", len(batch))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(result)


def _receipts(request: Request, runtime: Runtime) -> _Receipts:
    """The app's group-commit writer for the running loop (started on the first POST)."""
    receipts: _Receipts | None = getattr(request.app.state, "webhook_receipts", None)
    if receipts is None or not receipts.usable_in(asyncio.get_running_loop()):
        receipts = request.app.state.webhook_receipts = _Receipts(runtime)
    return receipts


def _store_and_kick(runtime: Runtime, verified_bodies: list[bytes]) -> list[webhooks_in.Received]:
    results = webhooks_in.store_webhooks(runtime.engine, verified_bodies)
    if any(r.status == "pending" for r in results):
        try:
            _kicker(runtime.redis_url).kick(runtime.settings.webhook_kick_debounce_ms)
        except Exception:  # stored already: the beat sweep applies it if the kick is lost
            log.warning("could not queue the webhook applier; the sweep will", exc_info=True)
    return results


class _Kicker:
    """Queues the applier at most once per debounce window, across all API processes.

    The first POST of a window sets a Redis key (SET NX PX) and queues the task to run when
    the window closes; every body stored while the key lives is committed by then. This
    process then skips Redis until that task's time (it learns it from the key's TTL when
    another process set it), so a busy receiver costs Redis a call or two per window.
    """

    def __init__(self, redis_url: str) -> None:
        self._redis = redis.Redis.from_url(redis_url)
        self._covered_until = 0.0
        self._lock = threading.Lock()

    def kick(self, debounce_ms: int) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._covered_until:
                return
            if self._redis.set(redis_keys.WEBHOOK_KICK, b"1", nx=True, px=debounce_ms):
                # The app itself, not the task proxy: Celery's current app is per thread,
                # and in a threadpool thread the proxy would be Celery's default AMQP app.
                from workers.app import app

                # Runs when the window closes, plus a margin for clock skew between hosts.
                app.send_task(APPLY_TASK, countdown=debounce_ms / 1000 + KICK_MARGIN_S)
                self._covered_until = now + debounce_ms / 1000
            else:
                left_ms = self._redis.pttl(redis_keys.WEBHOOK_KICK)
                if isinstance(left_ms, int) and left_ms > 0:
                    self._covered_until = now + left_ms / 1000


_kickers: dict[str, _Kicker] = {}


def _kicker(redis_url: str) -> _Kicker:
    kicker = _kickers.get(redis_url)
    if kicker is None:
        kicker = _kickers.setdefault(redis_url, _Kicker(redis_url))
    return kicker


@_operators.get(
    "/webhooks/report",
    response_model=webhooks_report.WebhookReport,
    summary="Inbox by status, unmatched statuses, rejected bodies, delivery failures by code",
)
def webhook_report(
    engine: EngineDep,
    campaign_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> webhooks_report.WebhookReport:
    return webhooks_report.webhook_report(engine, campaign_id=campaign_id, limit=limit)


router.include_router(_operators)
