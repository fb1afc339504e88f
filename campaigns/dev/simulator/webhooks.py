"""Signed status webhooks of the simulator: scheduled, batched, duplicated, reordered, retried.

A timing wheel of due events (tick number -> events), one dispatcher task that wakes every
``webhook_tick_s``, takes what is due, groups it per phone number id into batches and hands
them to a fixed pool of ``webhook_concurrency`` poster tasks over a bounded queue (so a slow
receiver holds events in the wheel instead of piling up tasks). One ``aiohttp.ClientSession``
for all POSTs. Memory per pending status is one small slotted object plus a list slot; the
message data (wamid, recipient, callback data) is shared by its statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass

import aiohttp

from campaigns.dev.simulator.config import SimulatorConfig
from schemas.whatsapp import SIGNATURE_HEADER, sign_payload

__all__ = ["Preference", "SentMessage", "WebhookCounters", "WebhookDispatcher"]

log = logging.getLogger(__name__)


class SentMessage:
    """An accepted message: the data all its status webhooks share.

    ``fail_code``: the message fails later with this code, after a ``sent`` status, or with
    ``fail_only`` as the only status (the platform found the recipient undeliverable after
    answering). ``user_id``: the recipient's business-scoped user id, shown beside the phone.
    """

    __slots__ = (
        "_tails",
        "biz",
        "fail_code",
        "fail_only",
        "pnid",
        "recipient_id",
        "user_id",
        "wamid",
    )

    def __init__(
        self,
        wamid: str,
        recipient_id: str,
        biz: str | None,
        pnid: str,
        fail_code: int | None,
        *,
        fail_only: bool = False,
        user_id: str | None = None,
    ) -> None:
        self.wamid = wamid  # base64url: safe inside a JSON string as is
        self.recipient_id = recipient_id
        self.biz = biz
        self.pnid = pnid
        self.fail_code = fail_code
        self.fail_only = fail_only
        self.user_id = user_id
        self._tails: tuple[str, str] | None = None

    @property
    def conversation_id(self) -> str:
        key = (self.pnid + ":" + self.recipient_id).encode()
        return hashlib.blake2b(key, digest_size=16).hexdigest()

    def tail(self, *, biz: bool = True) -> str:
        """The JSON members every status of this message repeats (escaped once); the callback
        data only with ``biz`` (the platform echoes it on sent, delivered and read only)."""
        if self._tails is None:
            tail = ',"recipient_id":' + json.dumps(self.recipient_id)
            if self.user_id is not None:
                tail += ',"recipient_user_id":' + json.dumps(self.user_id)
            with_biz = tail
            if self.biz is not None:
                with_biz += ',"biz_opaque_callback_data":' + json.dumps(self.biz)
            self._tails = (with_biz, tail)
        return self._tails[0] if biz else self._tails[1]

    def contact(self) -> dict[str, object]:
        out: dict[str, object] = {"profile": {"name": "Simulated User"}, "wa_id": self.recipient_id}
        if self.user_id is not None:
            out["user_id"] = self.user_id
        return out


class _Inbound:
    """A user's message to the business (e.g. a STOP reply). A user known only by a username
    has no ``from_``: only ``user_id`` (``from_user_id``)."""

    __slots__ = ("body", "from_", "name", "pnid", "user_id", "wamid")

    def __init__(
        self,
        from_: str | None,
        body: str,
        pnid: str,
        wamid: str,
        name: str | None,
        user_id: str | None = None,
    ) -> None:
        self.from_ = from_
        self.body = body
        self.pnid = pnid
        self.wamid = wamid
        self.name = name
        self.user_id = user_id

    def contact(self) -> dict[str, object]:
        out: dict[str, object] = {"profile": {"name": self.name or "Simulated User"}}
        if self.from_:
            out["wa_id"] = self.from_
        if self.user_id:
            out["user_id"] = self.user_id
        return out

    def message(self, ts: int) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.from_:
            out["from"] = self.from_
        if self.user_id:
            out["from_user_id"] = self.user_id
        out |= {"id": self.wamid, "timestamp": str(ts), "type": "text", "text": {"body": self.body}}
        return out


class Preference:
    """A user stopping or resuming marketing messages (a ``user_preferences`` webhook)."""

    __slots__ = ("pnid", "user_id", "value", "wa_id")

    def __init__(self, wa_id: str | None, user_id: str | None, value: str, pnid: str) -> None:
        self.wa_id = wa_id
        self.user_id = user_id
        self.value = value  # "stop" or "resume"
        self.pnid = pnid

    def item(self, ts: int) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.wa_id:
            out["wa_id"] = self.wa_id
        if self.user_id:
            out["user_id"] = self.user_id
        verb = "stop" if self.value == "stop" else "resume"
        return out | {
            "detail": f"User requested to {verb} marketing messages",
            "category": "marketing_messages",
            "value": self.value,
            "timestamp": ts,
        }

    def contact(self) -> dict[str, object]:
        out: dict[str, object] = {"profile": {"name": "Simulated User"}}
        if self.wa_id:
            out["wa_id"] = self.wa_id
        if self.user_id:
            out["user_id"] = self.user_id
        return out


class _Event:
    __slots__ = ("item", "status", "tries", "ts")

    def __init__(self, item: SentMessage | _Inbound | Preference, status: str, ts: int) -> None:
        self.item = item
        self.status = status  # "sent" / "delivered" / "read" / "failed" / "" for inbound
        self.ts = ts
        self.tries = 0


@dataclass
class WebhookCounters:
    posted: int = 0  # POSTs answered 2xx
    statuses_posted: int = 0  # status/message objects inside those (duplicates included)
    failed: int = 0  # POST attempts answered non-2xx or that failed (each retry counts)
    given_up: int = 0  # status/message objects dropped after webhook_max_tries
    scheduled: int = 0  # status/message objects ever scheduled (duplicates included)


_FAIL_TITLES = {
    131026: "Message undeliverable",
    131049: "This message was not delivered to maintain healthy ecosystem engagement.",
    131050: "Unable to deliver the message. This recipient has chosen to stop receiving "
    "marketing messages on WhatsApp from your business.",
    131000: "Something went wrong",
}


class WebhookDispatcher:
    def __init__(self, config: SimulatorConfig, rng: random.Random) -> None:
        self.config = config
        self._rng = rng
        # A timing wheel: tick number -> events due in that tick (O(1) scheduling).
        self._tick = config.webhook_tick_s
        self._wheel: dict[int, list[_Event]] = {}
        self._scheduled_now = 0  # events in the wheel
        self._inflight = 0
        self._wake = asyncio.Event()
        self._queue: asyncio.Queue[list[_Event]] = asyncio.Queue(
            maxsize=2 * config.webhook_concurrency
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.counters = WebhookCounters()

    # ------------------------------------------------------------------ lifecycle

    @property
    def enabled(self) -> bool:
        return bool(self.config.webhook_url)

    async def start(self) -> None:
        if self._tasks:
            return
        connector = aiohttp.TCPConnector(limit=self.config.webhook_concurrency)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout_s),
        )
        self._tasks.append(asyncio.create_task(self._dispatch_loop(), name="sim-wh-dispatch"))
        for i in range(self.config.webhook_concurrency):
            self._tasks.append(asyncio.create_task(self._post_loop(), name=f"sim-wh-post-{i}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def pending(self) -> int:
        """Status/message objects scheduled or in flight, not yet answered 2xx nor given up."""
        return self._scheduled_now + self._inflight

    def reset_counters(self, drop_pending: bool = False) -> None:
        self.counters = WebhookCounters()
        if drop_pending:
            self._wheel.clear()
            self._scheduled_now = 0

    # ------------------------------------------------------------------ scheduling

    def _push(self, due: float, event: _Event, new: bool = True) -> None:
        key = int(due / self._tick)
        bucket = self._wheel.get(key)
        if bucket is None:
            self._wheel[key] = [event]
        else:
            bucket.append(event)
        self._scheduled_now += 1
        if new:
            self.counters.scheduled += 1

    def schedule_message(self, msg: SentMessage, read: bool, skip_delivered: bool = False) -> None:
        """Schedule the statuses of an accepted message.

        Delivered: ``sent``, ``delivered`` and (if ``read``) ``read`` (with ``skip_delivered``
        a read message gets no ``delivered``, as when both happen at once); delivery failed
        (``msg.fail_code`` set): ``sent`` then ``failed``, or only ``failed`` with
        ``msg.fail_only``.
        """
        if not self.enabled:
            return
        cfg = self.config
        rng = self._rng
        names = _status_names(msg, read, skip_delivered)
        lo, hi = cfg.webhook_delay_min_s, cfg.webhook_delay_max_s
        span = hi - lo
        rand = rng.random
        draws = [lo + span * rand() for _ in names]
        ordered = sorted(draws)
        wall = time.time()
        stamps = [int(wall + d) for d in ordered]  # logical order, whatever the post order
        # iid draws in drawing order are a random permutation of the sorted ones: reordered
        posts = draws if cfg.reorder else ordered
        now = asyncio.get_running_loop().time()
        dup = cfg.duplicate_share
        for name, ts, delay in zip(names, stamps, posts, strict=True):
            self._push(now + delay, _Event(msg, name, ts))
            if dup and rand() < dup:
                self._push(now + delay + lo + span * rand(), _Event(msg, name, ts))
        self._wake.set()

    def schedule_inbound(
        self,
        from_: str | None,
        body: str,
        pnid: str,
        wamid: str,
        name: str | None = None,
        user_id: str | None = None,
    ) -> None:
        """Schedule an inbound text message webhook (a user writing to the business)."""
        self._schedule_one(_Inbound(from_, body, pnid, wamid, name, user_id))

    def schedule_preference(self, preference: Preference) -> None:
        """Schedule a ``user_preferences`` webhook (marketing messages stopped / resumed)."""
        self._schedule_one(preference)

    def _schedule_one(self, item: _Inbound | Preference) -> None:
        if not self.enabled:
            return
        now = asyncio.get_running_loop().time()
        delay = self._rng.uniform(self.config.webhook_delay_min_s, self.config.webhook_delay_max_s)
        self._push(now + delay, _Event(item, "", int(time.time())))
        self._wake.set()

    # ------------------------------------------------------------------ loops

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._scheduled_now:
                self._wake.clear()
                await self._wake.wait()
                continue
            current = int(loop.time() / self._tick)
            due = sorted(k for k in self._wheel if k <= current)
            if not due:  # one tick at a time, so what falls due together is batched
                await asyncio.sleep(self._tick)
                continue
            groups: dict[str, list[_Event]] = {}
            popped = 0
            for key in due:
                for event in self._wheel.pop(key):
                    groups.setdefault(event.item.pnid, []).append(event)
                    popped += 1
            self._scheduled_now -= popped
            self._inflight += popped  # counted as pending until answered or rescheduled
            size = self.config.webhook_batch_size
            in_order = not self.config.reorder
            for events in groups.values():
                for i in range(0, len(events), size):
                    if in_order:  # one POST at a time, so arrival order = due order
                        await self._deliver(events[i : i + size])
                    else:
                        await self._queue.put(events[i : i + size])

    async def _post_loop(self) -> None:
        while True:
            await self._deliver(await self._queue.get())

    async def _deliver(self, batch: list[_Event]) -> None:
        """POST one batch; account for it, or put it back for a retry."""
        try:
            ok = await self._post(batch)
        except asyncio.CancelledError:
            raise
        except Exception:  # never lose events to a bug in one POST
            log.exception("simulator webhook POST crashed")
            ok = False
        finally:
            self._inflight -= len(batch)
        if ok:
            self.counters.posted += 1
            self.counters.statuses_posted += len(batch)
        else:
            self.counters.failed += 1
            self._retry(batch)

    def _retry(self, batch: list[_Event]) -> None:
        cfg = self.config
        now = asyncio.get_running_loop().time()
        for event in batch:
            event.tries += 1
            if event.tries >= cfg.webhook_max_tries:
                self.counters.given_up += 1
                log.warning(
                    "simulator gave up a webhook after %d tries: %s %s",
                    event.tries,
                    getattr(event.item, "wamid", "?"),
                    event.status or "message",
                )
                continue
            backoff = min(
                cfg.webhook_retry_max_s, cfg.webhook_retry_base_s * 2 ** (event.tries - 1)
            )
            self._push(now + backoff * self._rng.uniform(0.8, 1.2), event, new=False)
        self._wake.set()

    async def _post(self, batch: list[_Event]) -> bool:
        url = self.config.webhook_url
        session = self._session
        if not url or session is None:
            return False
        body = self.render(batch)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_payload(body, self.config.app_secret),
        }
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.debug("simulator webhook POST failed: %r", exc)
            return False

    # ------------------------------------------------------------------ payloads

    def render(self, batch: list[_Event]) -> bytes:
        """The platform's envelope for one batch (all of one phone number id), as bytes.

        Assembled from pre-escaped pieces: at thousands of statuses per second a generic
        ``json.dumps`` of nested dicts would cost the simulator more than the sends.
        Statuses and messages share a ``messages`` change (with ``value.contacts``);
        preferences come in a ``user_preferences`` change of the same entry.
        """
        cfg = self.config
        head = (
            '{"messaging_product":"whatsapp","metadata":{"display_phone_number":'
            + json.dumps(cfg.display_phone_number)
            + ',"phone_number_id":'
            + json.dumps(batch[0].item.pnid)
            + "}"
        )
        changes = []
        messages = _messages_value(batch)
        if messages:
            changes.append('{"field":"messages","value":' + head + messages + "}}")
        prefs = [(e.item, e.ts) for e in batch if isinstance(e.item, Preference)]
        if prefs:
            contacts = json.dumps([p.contact() for p, _ in prefs])
            items = json.dumps([p.item(ts) for p, ts in prefs])
            value = head + ',"contacts":' + contacts + ',"user_preferences":' + items + "}"
            changes.append('{"field":"user_preferences","value":' + value + "}")
        return (
            '{"object":"whatsapp_business_account","entry":[{"id":'
            + json.dumps(cfg.waba_id)
            + ',"changes":['
            + ",".join(changes)
            + "]}]}"
        ).encode()


def _status_names(msg: SentMessage, read: bool, skip_delivered: bool) -> tuple[str, ...]:
    if msg.fail_code is not None:
        return ("failed",) if msg.fail_only else ("sent", "failed")
    if not read:
        return ("sent", "delivered")
    return ("sent", "read") if skip_delivered else ("sent", "delivered", "read")


def _messages_value(batch: list[_Event]) -> str:
    """The members after ``metadata`` of a ``messages`` change: statuses, inbound messages
    and the contacts they name (every status webhook carries ``value.contacts``)."""
    parts = []
    contacts: dict[str, dict[str, object]] = {}
    statuses = []
    for e in batch:
        if e.status and isinstance(e.item, SentMessage):
            statuses.append(_status_json(e))
            contacts.setdefault(e.item.recipient_id, e.item.contact())
    inbound = [(e.item, e.ts) for e in batch if isinstance(e.item, _Inbound)]
    for m, _ in inbound:
        contacts.setdefault(m.from_ or m.user_id or m.wamid, m.contact())
    if not statuses and not inbound:
        return ""
    parts.append(',"contacts":' + json.dumps(list(contacts.values())))
    if statuses:
        parts += [',"statuses":[', ",".join(statuses), "]"]
    if inbound:
        parts.append(',"messages":' + json.dumps([m.message(ts) for m, ts in inbound]))
    return "".join(parts)


# Per-message pricing (PMP), the only model since 2025-07-01: category and type.
_PRICED = (
    '"origin":{"type":"marketing"}},'
    '"pricing":{"billable":true,"pricing_model":"PMP","category":"marketing","type":"regular"}'
)
_ERROR_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


def _status_json(event: _Event) -> str:
    msg = event.item
    assert isinstance(msg, SentMessage)
    status = event.status
    ts = event.ts
    head = '{"id":"' + msg.wamid + '","status":"' + status + '","timestamp":"' + str(ts) + '"'
    if status in ("sent", "delivered"):
        extra = (
            ',"conversation":{"id":"'
            + msg.conversation_id
            + '","expiration_timestamp":"'
            + str(ts + 86400)
            + '",'
            + _PRICED
        )
    elif status == "failed":
        code = msg.fail_code or 131026
        title = _FAIL_TITLES.get(code, f"Error {code}")
        error = {
            "code": code,
            "title": title,
            "message": title,
            "error_data": {"details": f"Simulated delivery failure ({code})."},
            "href": _ERROR_HREF,
        }
        # A failed status may lack the callback data: the simulator never echoes it there.
        return head + msg.tail(biz=False) + ',"errors":' + json.dumps([error]) + "}"
    else:
        extra = ""
    return head + msg.tail() + extra + "}"
