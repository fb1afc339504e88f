"""One dispatcher per worker process: a single event loop that serves every running
campaign's chains.

A chain is a coroutine, so a campaign waiting for tokens, a send window or the tier holds no
worker slot, and any number of campaigns send side by side. The dispatcher refreshes its
list of running campaigns with due work from Postgres (one statement) whenever start/resume
wakes it through Redis, and at the latest every ``refresh_s``; for each it runs up to
``parallel`` chains, one per (campaign, slot) key across all dispatchers (``ChainKeys``,
renewed while the chain lives; a dead process's keys expire and another dispatcher takes
them). Each process prefers its own slot (``preferred_slot``: its pool index), so the chains
of one campaign spread over the worker's processes, and takes another slot only once it has
stayed free for ``FOREIGN_DELAY_S``.

Pacing: every campaign has its own bucket at its fair share of its sender
(``fair_rates``: its rate, scaled down in proportion when the sender's campaigns ask for
more than ``sender_max_rate_per_s`` together), and each sender has a bucket at that limit as
a safety net (``RedisSendGate``). The process's chains share one start ledger (start
statements group-committed) and one recorder (outcomes written every ~100 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from campaigns.domain.dispatch import CampaignPlan, fair_rates
from campaigns.services.dispatch.chain import run_chain
from campaigns.services.dispatch.ledger import StartLedger
from campaigns.services.dispatch.ports import ChainKeyStore, MessageTransport, SendGate, Wakeup
from campaigns.services.dispatch.recorder import OnReport, Recorder
from campaigns.services.dispatch.tick import running_due

log = logging.getLogger(__name__)

FOREIGN_DELAY_S = 1.0  # another process's preferred slot is taken after it stayed free this long
CHAIN_RUN_S = 30.0  # a chain ends after this long (plan reloaded, keys rebalanced), then restarts

Key = tuple[int, int]


@dataclass(frozen=True)
class DispatcherConfig:
    default_sender: str
    parallel: int = 2  # chains per campaign (DISPATCH_PARALLEL_BATCHES)
    preferred_slot: int = 0
    lease_margin_s: float = 60.0
    concurrency: int = 200
    key_ttl_s: float = 30.0
    pause_after: int = 20
    sender_max_rate_per_s: float = 1000.0
    refresh_s: float = 1.0
    chain_s: float = CHAIN_RUN_S


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        gate: SendGate,
        transport: MessageTransport,
        keys: ChainKeyStore,
        wakeup: Wakeup,
        config: DispatcherConfig,
        *,
        tier_blocked: Callable[[str], Awaitable[bool]] | None = None,
        on_report: OnReport | None = None,
    ) -> None:
        self.engine, self.gate, self.transport = engine, gate, transport
        self.keys, self.wakeup, self.config = keys, wakeup, config
        self.tier_blocked = tier_blocked
        self.recorder = Recorder(
            engine,
            pause_after=config.pause_after,
            tier_limit=gate.messaging_limit,
            tier_window_s=gate.tier_window_s,
            on_report=on_report,
        )
        self.ledger = StartLedger(engine)
        self.chains: dict[Key, asyncio.Task[None]] = {}
        self.lost: set[Key] = set()  # chains whose key is no longer theirs: they stop
        self.rates: dict[int, float] = {}
        self.wanted_since: dict[Key, float] = {}
        self.stopping = False
        self._refreshing = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        """Serves campaigns until ``stop`` is set; then lets its chains stop, waits for
        their last answers and records them."""
        renew = asyncio.create_task(self._renew_keys(stop))
        try:
            while not stop.is_set():
                await self.refresh()
                waiting = asyncio.create_task(self.wakeup.wait(self.config.refresh_s))
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
                for task in (waiting, stopped):
                    task.cancel()
        finally:
            self.stopping = True
            renew.cancel()
            await asyncio.gather(*self.chains.values(), return_exceptions=True)
            await self.recorder.drain()
            await self.ledger.close()

    async def refresh(self) -> None:
        """Starts the chains that running campaigns with due work lack here."""
        if self.stopping:
            return
        async with self._refreshing:
            try:
                await self._refresh()
            except Exception:  # Postgres or Redis away: the next refresh tries again
                log.warning("dispatcher refresh failed", exc_info=True)

    async def _refresh(self) -> None:
        due = await asyncio.to_thread(running_due, self.engine, self.config.default_sender)
        self.rates = fair_rates(due, self.config.sender_max_rate_per_s)
        now = asyncio.get_running_loop().time()
        wanted: set[Key] = set()
        for campaign_id, sender, _ in due:
            if self.tier_blocked is not None and await self.tier_blocked(sender):
                continue
            for slot in range(self.config.parallel):
                key = (campaign_id, slot)
                wanted.add(key)
                if key in self.chains:
                    continue
                since = self.wanted_since.setdefault(key, now)
                foreign = slot != self.config.preferred_slot % self.config.parallel
                if foreign and now - since < FOREIGN_DELAY_S:
                    continue
                if await self.keys.try_take(campaign_id, slot):
                    self.chains[key] = asyncio.create_task(self._chain(key))
        self.wanted_since = {k: v for k, v in self.wanted_since.items() if k in wanted}

    def rate_of(self, plan: CampaignPlan) -> float:
        return self.rates.get(plan.id, plan.rate_per_s)

    async def _chain(self, key: Key) -> None:
        campaign_id, slot = key
        more = False
        try:
            more = await run_chain(
                self.engine,
                campaign_id,
                self.gate,
                self.transport,
                default_sender=self.config.default_sender,
                lease_margin_s=self.config.lease_margin_s,
                concurrency=self.config.concurrency,
                max_s=self.config.chain_s,
                recorder=self.recorder,
                ledger=self.ledger,
                rate=self.rate_of,
                stopped=lambda: self.stopping or key in self.lost,
            )
        except Exception:
            log.exception("chain %s of campaign %s failed", slot, campaign_id)
        finally:
            self.chains.pop(key, None)
            self.lost.discard(key)
            with contextlib.suppress(Exception):
                await self.keys.release(campaign_id, slot)
        if more and not self.stopping:
            self.wanted_since[key] = 0.0  # ours again at once: no foreign delay
            asyncio.create_task(self.refresh())  # noqa: RUF006 - refresh() never raises

    async def _renew_keys(self, stop: asyncio.Event) -> None:
        period = max(0.2, self.config.key_ttl_s / 3)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
            held = list(self.chains)
            try:
                ours = await self.keys.renew(held)
            except Exception:
                log.warning("could not renew the chain keys", exc_info=True)
                continue
            self.lost.update(key for key, kept in zip(held, ours, strict=True) if not kept)
