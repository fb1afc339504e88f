"""Requests/s and client CPU per request of the WhatsApp client over four transports.

A trivial aiohttp server answering the Cloud API success JSON runs in a subprocess (its
own core); this process drives ``WhatsAppClient.send_template`` with CONCURRENCY
concurrent senders for DURATION_S per transport: httpx's own pool (httpcore), httpx over
the aiohttp transport (``httpx_aiohttp``), a bare ``aiohttp.ClientSession`` (the production
path until 2026-12-03, kept here as the baseline) and the client's production path, the lean
HTTP/1.1 pool (``campaigns.clients.http1``). Prints one JSON line: {"httpx_default_rps",
"httpx_aiohttp_rps", "aiohttp_rps", "http1_rps", "ratio" (httpx over aiohttp / httpx
default), "aiohttp_vs_httpx_aiohttp", "http1_vs_aiohttp" (CPU per request, aiohttp over
http1), "*_cpu_us_per_req" (this process's CPU per request, payload building and parsing
included), ...}.

    .venv/bin/python bench/client_transport.py [--duration 5] [--concurrency 200]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from campaigns.clients.whatsapp import WhatsAppClient, WhatsAppEndpoint, default_transport


async def _serve() -> None:
    from aiohttp import web

    counter = itertools.count()

    async def messages(request: web.Request) -> web.Response:
        body = await request.json()
        to = body["to"]
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": f"wamid.bench{next(counter)}", "message_status": "accepted"}],
            }
        )

    app = web.Application()
    app.router.add_post("/{version}/{phone_number_id}/messages", messages)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(port, flush=True)
    await asyncio.Event().wait()


class _AiohttpSessionClient(WhatsAppClient):
    """The former production path: the same client over a bare ``aiohttp.ClientSession``."""

    def __init__(self, max_connections: int) -> None:
        super().__init__(max_connections=max_connections)
        self._limit = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def _post(self, url: str, body: bytes, token: str) -> tuple[int, bytes]:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0)
            self._session = aiohttp.ClientSession(connector=connector)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with self._session.post(url, data=body, headers=headers) as r:
            return r.status, await r.read()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await super().aclose()


async def _measure(
    client: WhatsAppClient, endpoint: WhatsAppEndpoint, concurrency: int, duration_s: float
) -> tuple[float, float]:
    """(requests/s, client CPU microseconds per request)."""
    stop_at = 0.0
    done = 0

    async def sender(worker: int) -> None:
        nonlocal done
        n = 0
        while time.perf_counter() < stop_at:
            result = await client.send_template(
                endpoint,
                to_e164=f"+49151{worker:04d}{n % 1000:03d}",
                template="bf_offer",
                language="en",
                body_params=["Anna", "20%"],
                callback_data=f"attempt-{worker}-{n}",
            )
            if result.wamid is None:
                raise RuntimeError(f"bench send failed: {result}")
            n += 1
            done += 1

    # Warm-up: open the pool's connections before timing.
    stop_at = time.perf_counter() + 0.5
    await asyncio.gather(*(sender(i) for i in range(concurrency)))
    done = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    stop_at = started + duration_s
    await asyncio.gather(*(sender(i) for i in range(concurrency)))
    rps = done / (time.perf_counter() - started)
    return rps, 1e6 * (time.process_time() - cpu_started) / max(1, done)


async def _run(port: int, concurrency: int, duration_s: float) -> dict[str, float | int]:
    endpoint = WhatsAppEndpoint(
        base_url=f"http://127.0.0.1:{port}",
        api_version="v21.0",
        phone_number_id="1234",
        token="bench-token",
    )
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = {
        "httpx_default": WhatsAppClient(
            max_connections=concurrency, transport=httpx.AsyncHTTPTransport(limits=limits)
        ),
        "httpx_aiohttp": WhatsAppClient(transport=default_transport(concurrency)),
        "aiohttp": _AiohttpSessionClient(concurrency),
        "http1": WhatsAppClient(max_connections=concurrency),  # the production path
    }
    out: dict[str, float | int] = {}
    for name, client in clients.items():
        try:
            rps, cpu_us = await _measure(client, endpoint, concurrency, duration_s)
        finally:
            await client.aclose()
        out[f"{name}_rps"] = round(rps, 1)
        out[f"{name}_cpu_us_per_req"] = round(cpu_us, 1)
    return {
        **out,
        "ratio": round(float(out["httpx_aiohttp_rps"]) / float(out["httpx_default_rps"]), 2),
        "aiohttp_vs_httpx_aiohttp": round(
            float(out["aiohttp_rps"]) / float(out["httpx_aiohttp_rps"]), 2
        ),
        "http1_vs_aiohttp": round(
            float(out["aiohttp_cpu_us_per_req"]) / float(out["http1_cpu_us_per_req"]), 2
        ),
        "concurrency": concurrency,
        "duration_s": duration_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        result = asyncio.run(_run(port, args.concurrency, args.duration))
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
