"""How the API process runs: uvicorn's limits, and what starts and stops with the app.

``wa-campaigns serve`` runs::

    uvicorn.run("campaigns.api.app:create_app", factory=True, host=..., port=...,
                log_level="info", **uvicorn_config(get_settings()))

- ``limit_concurrency``: past ``HTTP_LIMIT_CONCURRENCY`` connections and requests in flight
  uvicorn answers 503 at once instead of queueing without bound.
- Bounded request heads: h11 refuses a head over ``HTTP_MAX_HEADER_BYTES``
  (``h11_max_incomplete_event_size``); uvicorn's httptools protocol has no such limit, so
  :class:`BoundedHttpToolsProtocol` adds it (400 and the connection closed).
- ``log_config=None``: our root handler (phone numbers masked, tokens redacted) stays.

The app's lifespan (:func:`lifespan`) starts the /metrics listener on ``METRICS_PORT``,
so it runs wherever the app runs, without a CLI flag.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from campaigns.api import metrics
from campaigns.runtime import collector
from campaigns.runtime.config import Settings, get_settings
from campaigns.runtime.stores import resolve

log = logging.getLogger(__name__)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request line and headers.

    llhttp accepts headers of any size and uvicorn buffers them, so a client could send
    megabytes of header before the app sees anything. The bytes received while a head is
    incomplete are counted; past the limit the connection gets a 400 and is closed. The
    check runs after each chunk was parsed, so a chunk that ends the head (and carries
    body bytes) is never refused for its body.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head = int(self.config.h11_max_incomplete_event_size or 64 * 1024)
        self._head_bytes = 0
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # the next request on this connection

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        over = self._in_head and self._head_bytes > self._max_head
        if over and self.parser is not None and not self.transport.is_closing():
            self.logger.warning("request head over %s bytes refused", self._max_head)
            self.send_400_response("Request header fields too large.")


def uvicorn_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` besides app, host and port."""
    return {
        "http": BoundedHttpToolsProtocol,
        "limit_concurrency": settings.http_limit_concurrency,
        "h11_max_incomplete_event_size": settings.http_max_header_bytes,
        "log_config": None,
        "server_header": False,
    }


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Starts the /metrics listener with the app and stops it with the app."""
    listener = await run_in_threadpool(_start_metrics)
    app.state.metrics_listener = listener
    collector.settle()  # set up: its objects live as long as the process (runtime.collector)
    try:
        yield
    finally:
        if listener is not None:
            await run_in_threadpool(listener.stop)


def _start_metrics() -> metrics.MetricsListener | None:
    settings = get_settings()
    runtime = resolve()
    return metrics.start_listener(
        runtime.engine,
        redis.Redis.from_url(runtime.redis_url),
        host=settings.metrics_host,
        port=settings.metrics_port,
        query_timeout_s=settings.metrics_query_timeout_s,
    )
