"""Ways to run the simulator: in the current loop, blocking, or in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvloop
from aiohttp import web

from campaigns.dev.simulator.config import SimulatorConfig, apply_updates
from campaigns.dev.simulator.server import STATE_KEY, SimulatorState, build_app
from campaigns.runtime import collector

__all__ = ["RunningSimulator", "run_simulator", "serve", "start_site"]

log = logging.getLogger(__name__)


async def start_site(config: SimulatorConfig) -> tuple[web.AppRunner, int]:
    """Start the app on ``config.host:config.port`` (port 0 = a free one); -> runner, port."""
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()  # stops the webhook tasks and closes their session
        raise
    port = config.port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            port = int(addr[1])
            break
    return runner, port


async def run_simulator(
    config: SimulatorConfig, ready: Callable[[int], None] | None = None
) -> None:
    """Serve until cancelled. ``ready(port)`` is called once the socket listens."""
    runner, port = await start_site(config)
    log.info(
        "WhatsApp Cloud API simulator on http://%s:%d (webhooks -> %s)",
        config.host,
        port,
        config.webhook_url or "off",
    )
    if ready is not None:
        ready(port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(config: SimulatorConfig) -> None:
    """Blocking entry point for the CLI; Ctrl-C or SIGTERM stops it cleanly."""

    async def main() -> None:
        task = asyncio.current_task()
        if task is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_simulator(config)

    # uvloop and a settled GC: on a shared box the stand-in for the platform should take as
    # little of the CPU the benchmarks measure our pipeline on as it can.
    collector.settle()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main())


class RunningSimulator:
    """The simulator in a daemon thread with its own event loop (tests, e2e, benchmarks).

    ::

        with RunningSimulator(SimulatorConfig(port=0)) as sim:
            httpx.post(f"{sim.api_url}/123/messages", ...)
            sim.state.stats()
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """``base_url`` + ``/{api_version}``: what ``WHATSAPP_API_URL``+version resolve to."""
        return f"{self.base_url}/{self.config.api_version}"

    @property
    def state(self) -> SimulatorState:
        """Live state (read from the test thread; values are plain ints/dicts)."""
        if self._runner is None:
            raise RuntimeError("simulator not started")
        return self._runner.app[STATE_KEY]

    def call(self, fn: Callable[[SimulatorState], object]) -> object:
        """Run ``fn(state)`` on the simulator's loop and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("simulator not started")

        async def _do() -> object:
            return fn(self.state)

        return asyncio.run_coroutine_threadsafe(_do(), loop).result(timeout=10)

    def stats(self, by_recipient: bool = True) -> dict[str, Any]:
        """``GET /_sim/stats`` without HTTP, taken on the simulator's loop (consistent)."""
        result = self.call(lambda st: st.stats(by_recipient=by_recipient))
        assert isinstance(result, dict)
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in result.items()}

    def update_config(self, **updates: Any) -> SimulatorConfig:
        """Change settings at run time (as ``POST /_sim/config``)."""

        def _apply(st: SimulatorState) -> SimulatorConfig:
            st.set_config(apply_updates(st.config, updates))
            return st.config

        result = self.call(_apply)
        assert isinstance(result, SimulatorConfig)
        return result

    def start(self, timeout: float = 10.0) -> RunningSimulator:
        self._thread = threading.Thread(target=self._main, name="wa-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("simulator did not start in time")
        if self._error is not None:
            raise RuntimeError("simulator failed to start") from self._error
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._amain())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _amain(self) -> None:
        self._stop = asyncio.Event()
        self._runner, self.port = await start_site(self.config)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._runner.cleanup()

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> RunningSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
