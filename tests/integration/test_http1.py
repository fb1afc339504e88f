"""The lean HTTP/1.1 client on real sockets: keep-alive, answer framings, the pool's bound,
and the one distinction dispatch lives by (never sent = CONNECT, maybe sent = AFTER_SEND)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from campaigns.clients.http1 import Http1Pool, RequestNotSent, ResponseLost, request_head
from campaigns.clients.whatsapp import WhatsAppClient, WhatsAppEndpoint
from campaigns.domain.outcomes import SendResult, TransportFailure

TOKEN = "secret-token-123"
ANSWER = json.dumps(
    {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "15550001", "wa_id": "15550001"}],
        "messages": [{"id": "wamid.ok", "message_status": "accepted"}],
    }
).encode()


def with_length(body: bytes = ANSWER, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (
            extra,
            len(body),
            body,
        )
    )


Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Every case on both loops: the dispatch worker runs uvloop, whose transports differ."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


Reply = Callable[[int], Awaitable[bytes | None]]  # request number -> answer bytes, None: hang up


class Server:
    """A scripted HTTP/1.1 server: reads each whole request, answers what ``reply`` says."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                answer = await self.reply(len(self.requests))
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                ends = b"Connection: close" in answer or answer.startswith(b"HTTP/1.0")
                if ends or b"\r\n\r\n" not in answer:
                    break  # the answer ends the connection, or is cut short
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(data: bytes | None, delay_s: float = 0.0) -> Reply:
    async def reply(_: int) -> bytes | None:
        if delay_s:
            await asyncio.sleep(delay_s)
        return data

    return reply


async def send(client: WhatsAppClient, url: str, token: str = TOKEN) -> SendResult:
    endpoint = WhatsAppEndpoint(url, "v21.0", "1", token)
    return await client.send_template(
        endpoint, to_e164="+15550001", template="t", language="en", body_params=["x"],
        callback_data="a",
    )  # fmt: skip


def test_sends_reuse_one_keep_alive_connection_and_carry_the_headers(run: Runner) -> None:
    async def main() -> None:
        async with Server(answer(with_length())) as server, WhatsAppClient() as client:
            results = [await send(client, server.url) for _ in range(5)]
            assert [r.wamid for r in results] == ["wamid.ok"] * 5
            assert server.connections == 1
        head, _, body = server.requests[0].partition(b"\r\n\r\n")
        assert head.startswith(b"POST /v21.0/1/messages HTTP/1.1\r\n")
        assert b"\r\nAuthorization: Bearer secret-token-123" in head
        assert b"\r\nContent-Type: application/json" in head
        assert b"\r\nHost: 127.0.0.1:" in head
        assert json.loads(body)["to"] == "15550001"

    run(main())


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (20, ANSWER[:20])
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(ANSWER) - 20, ANSWER[20:]),
        b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + ANSWER,  # ends at close
        b"HTTP/1.1 100 Continue\r\n\r\n" + with_length(),
    ],
    ids=["chunked", "ended-by-close", "after-100-continue"],
)
def test_every_answer_framing_is_read_whole(raw: bytes, run: Runner) -> None:
    async def main() -> SendResult:
        async with Server(answer(raw)) as server, WhatsAppClient() as client:
            return await send(client, server.url)

    result = run(main())
    assert (result.http_status, result.wamid, result.wa_id) == (200, "wamid.ok", "15550001")


def test_a_connection_close_answer_is_honoured_and_the_next_send_reconnects(run: Runner) -> None:
    async def main() -> None:
        reply = answer(with_length(extra=b"Connection: close\r\n"))
        async with Server(reply) as server, WhatsAppClient() as client:
            assert (await send(client, server.url)).wamid == "wamid.ok"
            assert (await send(client, server.url)).wamid == "wamid.ok"
            assert server.connections == 2

    run(main())


def test_an_idle_connection_past_its_keep_alive_is_not_reused(run: Runner) -> None:
    async def main() -> None:
        async with Server(answer(with_length())) as server:
            pool = Http1Pool(max_connections=4, keepalive_s=0.05, timeout_s=2.0)
            origin, head = request_head(f"{server.url}/p", {})
            request = head + b"0\r\n\r\n"
            assert (await pool.post(origin, request))[0] == 200
            assert (await pool.post(origin, request))[0] == 200
            assert server.connections == 1
            await asyncio.sleep(0.1)
            assert (await pool.post(origin, request))[0] == 200
            assert server.connections == 2
            assert pool.open_connections == 1  # the expired one was closed, not kept
            await pool.aclose()

    run(main())


def test_a_full_pool_queues_sends_on_its_connections(run: Runner) -> None:
    async def main() -> None:
        async with Server(answer(with_length(), delay_s=0.02)) as server:
            pool = Http1Pool(max_connections=2, keepalive_s=5.0, timeout_s=2.0)
            origin, head = request_head(f"{server.url}/p", {})
            answers = await asyncio.gather(
                *(pool.post(origin, head + b"0\r\n\r\n") for _ in range(10))
            )
            assert [status for status, _ in answers] == [200] * 10
            assert server.connections == 2
            await pool.aclose()

    run(main())


def test_no_free_connection_in_time_is_not_sent_and_the_busy_one_is_lost(run: Runner) -> None:
    async def main() -> tuple[BaseException | tuple[int, bytes], ...]:
        async with Server(answer(with_length(), delay_s=5.0)) as server:
            pool = Http1Pool(max_connections=1, keepalive_s=5.0, timeout_s=0.2)
            origin, head = request_head(f"{server.url}/p", {})
            try:
                return await asyncio.gather(
                    pool.post(origin, head + b"0\r\n\r\n"),
                    pool.post(origin, head + b"0\r\n\r\n"),
                    return_exceptions=True,
                )
            finally:
                await pool.aclose()

    busy, queued = run(main())
    assert isinstance(busy, ResponseLost)  # written, never answered: maybe taken
    assert isinstance(queued, RequestNotSent)  # never written


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 << 20) + b"x" * (2 << 20), "larger"),
        (b"SMTP ready\r\n\r\n", "malformed"),
        (None, "closed"),
        (b"HTTP/1.1 200 OK\r\nContent-Ty", "closed"),  # never a 200 with an empty body
    ],
    ids=["oversized", "not-http", "hang-up", "cut-in-the-headers"],
)
def test_a_lost_answer_is_after_send(raw: bytes | None, message: str, run: Runner) -> None:
    async def main() -> SendResult:
        async with Server(answer(raw)) as server, WhatsAppClient(timeout_s=2.0) as client:
            return await send(client, server.url)

    result = run(main())
    assert result.transport is TransportFailure.AFTER_SEND
    assert message in (result.error_details or "")


def test_no_answer_within_the_timeout_is_after_send(run: Runner) -> None:
    async def main() -> SendResult:
        server = Server(answer(with_length(), delay_s=5.0))
        async with server, WhatsAppClient(timeout_s=0.2) as client:
            return await send(client, server.url)

    result = run(main())
    assert result.transport is TransportFailure.AFTER_SEND
    assert result.error_details == "no answer within 0.2 s"


def test_a_refused_connection_is_connect(run: Runner) -> None:
    async def main() -> SendResult:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()  # nothing listens on that port any more
        async with WhatsAppClient(timeout_s=2.0) as client:
            return await send(client, f"http://127.0.0.1:{port}")

    assert run(main()).transport is TransportFailure.CONNECT


def test_a_tls_origin_verifies_the_certificate_before_sending(tmp_path: Path, run: Runner) -> None:
    # A self-signed certificate: the handshake fails, so the request never left.
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ssl_args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=x"]

    async def main() -> tuple[SendResult, int]:
        proc = await asyncio.create_subprocess_exec(
            "openssl", *ssl_args, "-keyout", str(key), "-out", str(cert),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await proc.wait() == 0
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server = Server(answer(with_length()))
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=context)
        port = server.server.sockets[0].getsockname()[1]
        async with server, WhatsAppClient(timeout_s=2.0) as client:
            return await send(client, f"https://127.0.0.1:{port}"), len(server.requests)

    result, requests = run(main())
    assert result.transport is TransportFailure.CONNECT
    assert "CERTIFICATE_VERIFY_FAILED" in (result.error_details or "")
    assert requests == 0


def test_a_cancelled_send_never_leaves_its_connection_in_the_pool(run: Runner) -> None:
    async def main() -> None:
        async with Server(answer(with_length(), delay_s=0.3)) as server:
            pool = Http1Pool(max_connections=1, keepalive_s=5.0, timeout_s=2.0)
            origin, head = request_head(f"{server.url}/p", {})
            task = asyncio.create_task(pool.post(origin, head + b"0\r\n\r\n"))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pool.open_connections == 0
            # Its late answer cannot be taken for the next request's.
            assert (await pool.post(origin, head + b"0\r\n\r\n"))[0] == 200
            assert server.connections == 2
            await pool.aclose()

    run(main())


@pytest.mark.parametrize("token", ["bad\r\nX-Injected: 1", "tab\tbad", "caf\u00e9"])
def test_a_token_that_would_break_the_header_is_refused_before_anything_is_sent(
    token: str, run: Runner
) -> None:
    async def main() -> int:
        async with Server(answer(with_length())) as server, WhatsAppClient() as client:
            with pytest.raises(ValueError, match="Authorization header"):
                await send(client, server.url, token=token)
            return server.connections

    assert run(main()) == 0
