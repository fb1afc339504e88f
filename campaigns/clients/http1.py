"""A lean HTTP/1.1 client for the send path: keep-alive connections, one request at a time on
each, answers parsed by httptools (llhttp, in C).

Why not aiohttp: at ~2,000 sends/s its client machinery (request and response objects, header
multidicts, tracing hooks, payload registry, stream readers) was ~30 % of the dispatch worker's
CPU (py-spy, BENCHMARKS.md). A send here is one ``transport.write`` of bytes built from a
per-endpoint head and one C parse of the answer.

What it keeps from a full client, because production needs it: TLS (``https`` origins,
verified with the system's CA store), a bounded pool with a wait (``max_connections``), idle
connections dropped after ``keepalive_s`` (before common server keep-alive timeouts), answers
with Content-Length, chunked or ended by close, ``Connection: close`` honoured, a bounded
answer size, and the one distinction dispatch lives by: :class:`RequestNotSent` when the
request provably never left (connect failed, TLS failed, no connection free in time) and
:class:`ResponseLost` for everything after the first byte was written (the platform may have
taken the message). A request is never retried here: a POST is not idempotent.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["Http1Pool", "Origin", "RequestNotSent", "ResponseLost", "request_head"]

MAX_ANSWER_BYTES: Final = 1 << 20  # a Graph answer is a few hundred bytes; more is not one


class RequestNotSent(Exception):
    """No byte of the request left: connecting, the TLS handshake or the pool wait failed."""


class ResponseLost(Exception):
    """The request was written (or partly), but no complete answer came back."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def _origin_and_target(url: str) -> tuple[Origin, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the URL must be http:// or https:// with a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(parts.scheme, parts.hostname, port), target


def _header_value(name: str, value: str) -> str:
    # A CR or LF in a value would end the header and let the value inject others.
    if not value.isprintable() or not value.isascii():
        raise ValueError(f"the {name} header holds a character HTTP/1.1 cannot carry")
    return value


def request_head(url: str, headers: dict[str, str]) -> tuple[Origin, bytes]:
    """The origin and the bytes of a POST up to ``Content-Length: `` (the body's length and
    the body follow): built once per endpoint, reused for every send to it."""
    origin, target = _origin_and_target(url)
    if any(ch in target for ch in " \r\n") or not target.isascii():
        raise ValueError("the URL path must be ASCII without spaces")
    host = f"[{origin.host}]" if ":" in origin.host else origin.host  # an IPv6 literal
    if origin.port != (443 if origin.tls else 80):
        host = f"{host}:{origin.port}"
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {_header_value(name, value)}" for name, value in headers.items()]
    lines.append("Content-Length: ")
    return origin, "\r\n".join(lines).encode("ascii")


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight."""

    def __init__(self, pool: Http1Pool, origin: Origin) -> None:
        self.pool, self.origin = pool, origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._framed = False  # the answer's headers gave a length or chunks
        self._ends_at_close = False  # its headers are in and gave neither: it ends at close

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ResponseLost(f"malformed answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._ends_at_close:
                self._finish(keep=False)
            else:
                reason = f": {exc}" if exc else ""
                self._fail(
                    ResponseLost(f"the server closed the connection before answering{reason}")
                )
        self.pool._forget(self)

    # -- httptools callbacks ----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self._framed = True

    def on_message_begin(self) -> None:
        self._body, self._size, self._framed, self._ends_at_close = [], 0, False, False

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._ends_at_close = not self._framed and status >= 200 and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_ANSWER_BYTES:
            self._fail(ResponseLost(f"answer larger than {MAX_ANSWER_BYTES} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            return  # an interim answer (100 Continue): the real one follows
        self._finish(keep=self._parser.should_keep_alive())

    # -- requests ---------------------------------------------------------------------

    def request(self, data: bytes, timeout_s: float) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        assert self._waiter is None
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._timer = loop.call_later(timeout_s, self._timed_out, timeout_s)
        try:
            self.transport.write(data)
        except Exception as exc:  # a transport closing under us; whether bytes left is unknown
            self._fail(ResponseLost(f"the request could not be written: {exc!r}"))
        return waiter

    def _timed_out(self, timeout_s: float) -> None:
        self._timer = None
        self._fail(ResponseLost(f"no answer within {timeout_s:g} s"))

    def _settle(self) -> asyncio.Future[tuple[int, bytes]] | None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return waiter if waiter is not None and not waiter.done() else None

    def _finish(self, *, keep: bool) -> None:
        status, body = self._parser.get_status_code(), b"".join(self._body)
        self._body, self._ends_at_close = [], False
        waiter = self._settle()
        if keep and not self.closed:
            self.pool._release(self)
        else:
            self.close()
        if waiter is not None:
            waiter.set_result((status, body))

    def _fail(self, exc: Exception) -> None:
        waiter = self._settle()
        self.close()  # its state is unknown: never reused
        if waiter is not None:
            waiter.set_exception(exc)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            self.pool._forget(self)


class Http1Pool:
    """Keep-alive connections per origin, at most ``max_connections`` open at once.

    One per event loop. ``timeout_s`` bounds getting a connection (pool wait, connect and TLS
    together) and, separately, the answer to each request once it is written."""

    def __init__(self, *, max_connections: int, keepalive_s: float, timeout_s: float) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections, self.keepalive_s, self.timeout_s = (
            max_connections,
            keepalive_s,
            timeout_s,
        )
        self._idle: dict[Origin, collections.deque[_Connection]] = {}
        self._open: set[_Connection] = set()  # connected, idle or busy
        self._connecting = 0  # connections being opened: they count against the bound too
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._tls: ssl.SSLContext | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open) + self._connecting

    async def post(self, origin: Origin, data: bytes) -> tuple[int, bytes]:
        """Writes ``data`` (a whole request) on a connection to ``origin``; returns the
        answer's status and body. Raises :class:`RequestNotSent` or :class:`ResponseLost`."""
        connection = await self._acquire(origin)
        waiter = connection.request(data, self.timeout_s)
        try:
            return await waiter
        except asyncio.CancelledError:
            connection.close()  # an answer may still come: this connection is out of step
            raise

    async def _acquire(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while True:
            connection = self._take_idle(origin, loop.time())
            if connection is not None:
                return connection
            if self.open_connections < self.max_connections:
                return await self._connect(origin, deadline - loop.time())
            await self._wait_for_slot(deadline - loop.time())

    def _take_idle(self, origin: Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()  # the most recently used: the others may expire
            if connection.closed:
                continue
            if now - connection.idle_since < self.keepalive_s:
                return connection
            connection.close()
        return None

    async def _wait_for_slot(self, remaining_s: float) -> None:
        if remaining_s <= 0:
            raise RequestNotSent(f"no connection free within {self.timeout_s:g} s")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(remaining_s):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken as the time ran out: the slot goes to the next
            raise RequestNotSent(f"no connection free within {self.timeout_s:g} s") from None
        finally:
            if not waiter.done():
                waiter.cancel()
                self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, origin: Origin, remaining_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.tls else None
        connection: _Connection | None = None
        self._connecting += 1
        try:
            async with asyncio.timeout(max(remaining_s, 0.0)):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise RequestNotSent(f"cannot connect to {origin.host}:{origin.port}: {exc!r}") from exc
        finally:
            self._connecting -= 1
            if connection is None or connection.closed:
                self._wake_one()  # the slot this connect held is free again
        if connection.closed:  # the server hung up as soon as it accepted
            raise RequestNotSent(f"{origin.host}:{origin.port} closed the connection at once")
        self._open.add(connection)
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _release(self, connection: _Connection) -> None:
        now = asyncio.get_running_loop().time()
        connection.idle_since = now
        idle = self._idle.setdefault(connection.origin, collections.deque())
        idle.append(connection)
        # The least recently used sit at the left: close those past their keep-alive, so they
        # do not pile up. None is ever used past it (``_take_idle``): a server closing an idle
        # connection as we write would turn a send into "outcome unknown".
        while idle and now - idle[0].idle_since >= self.keepalive_s:
            idle.popleft().close()
        self._wake_one()

    def _forget(self, connection: _Connection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            self._wake_one()

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(RequestNotSent("the client is closed"))
        self._waiters.clear()
