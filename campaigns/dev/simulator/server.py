"""The Cloud API simulator as an aiohttp application.

Endpoints:

- ``POST /{version}/{phone_number_id}/messages`` - a template send. Checks, in order:
  bearer token (401, code 190); body is a ``TemplateSendRequest`` with a ``to`` holding
  digits (400, code 100); template in ``missing_templates`` (400, code 132001); body
  parameter count vs ``template_param_counts`` (400, code 132000); the per phone number id
  token bucket (429, code 130429); then the recipient's outcome
  (:func:`campaigns.dev.simulator.outcomes.outcome_for`, attempt numbers counted per recipient
  from here on); then the pair rate (429, code 131056, only for sends that would be
  accepted). Accepted: 200 with the platform's body, a unique wamid, status webhooks
  scheduled; a TIMEOUT outcome is accepted the same way but answered only after
  ``timeout_hang_s``; an ACCEPTED_ERROR outcome is accepted the same way but answered with a
  server error (a retry of it is a second accepted send).
- ``GET /_sim/stats`` (``?by_recipient=0`` leaves the per-recipient map out),
  ``POST /_sim/reset`` (``?drop_webhooks=1`` also empties the webhook queue),
  ``GET|POST /_sim/config`` (runtime changes, see :func:`config.apply_updates`),
  ``POST /_sim/inbound`` ``{"from": digits, "text": "STOP", "phone_number_id": "..."}``
  (posts a user message webhook; ``from_user_id`` instead of ``from`` for a user known only
  by a username), ``POST /_sim/user_preferences`` ``{"wa_id": digits, "value": "stop"}``
  (a user_preferences webhook: stop / resume marketing messages), ``GET /_sim/health``.
- ``POST /v1/contacts`` - the on-premises / BSP contacts check (seeds 002, 004), in
  ``classic`` or ``repurposed`` mode (:mod:`campaigns.dev.simulator.contacts`).
- Any other path or method: HTTP 400 with a Graph error body (code 100, subcode 33).

Template checks: component types are case-insensitive (``"BODY"``); a text parameter with a
new-line, a tab or 5 consecutive spaces is refused with 132018, as the platform does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import random
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from campaigns.dev.simulator import contacts
from campaigns.dev.simulator.config import SimulatorConfig, apply_updates
from campaigns.dev.simulator.outcomes import (
    PARAM_TEXT_DETAILS,
    Outcome,
    OutcomeKind,
    error_info,
    outcome_for,
    reads,
    skips_delivered,
    wa_id_for,
)
from campaigns.dev.simulator.webhooks import Preference, SentMessage, WebhookDispatcher
from schemas.whatsapp import TemplateSendRequest

__all__ = ["STATE_KEY", "SimulatorState", "TokenBucket", "build_app"]

log = logging.getLogger(__name__)

_JSON = "application/json"


class TokenBucket:
    """Token bucket: ``rate`` tokens per second, burst ``capacity``."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class _Counts:
    requests_total: int = 0
    accepted_total: int = 0
    timeouts_total: int = 0
    contacts_checked_total: int = 0
    contacts_requests_total: int = 0


class SimulatorState:
    """All mutable state of one simulator instance (one event loop, no locks needed)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)  # simulation, not security
        self.webhooks = WebhookDispatcher(config, self.rng)
        self.closing = asyncio.Event()
        self._wamid_prefix = os.urandom(8)
        self._wamid_seq = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        self.counts = _Counts()
        self.accepted_by_recipient: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.last_accepted: dict[str, float] = {}
        self.rejected_by_code: Counter[int] = Counter()
        self.buckets: dict[str, TokenBucket] = {}
        self.contacts_seen: set[str] = set()

    def set_config(self, config: SimulatorConfig) -> None:
        old = self.config
        self.config = config
        self.webhooks.config = config
        if (old.rate_per_second or 0) != (config.rate_per_second or 0):
            self.buckets.clear()

    def new_wamid(self) -> str:
        raw = self._wamid_prefix + next(self._wamid_seq).to_bytes(8, "big")
        return "wamid." + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def take_token(self, pnid: str, now: float) -> bool:
        rate = self.config.rate_per_second
        if not rate:
            return True
        bucket = self.buckets.get(pnid)
        if bucket is None:
            bucket = self.buckets[pnid] = TokenBucket(rate, max(rate, 1.0), now)
        return bucket.take(now)

    def stats(self, by_recipient: bool = True) -> dict[str, Any]:
        dups = sorted(d for d, n in self.accepted_by_recipient.items() if n > 1)
        wh = self.webhooks.counters
        out: dict[str, Any] = {
            "requests_total": self.counts.requests_total,
            "accepted_total": self.counts.accepted_total,
            "unique_recipients": len(self.accepted_by_recipient),
            "duplicates": dups,
            "duplicate_count": len(dups),
            "duplicate_sends": sum(self.accepted_by_recipient[d] - 1 for d in dups),
            "rejected_total": sum(self.rejected_by_code.values()),
            "rejected_by_code": {str(c): n for c, n in sorted(self.rejected_by_code.items())},
            "timeouts_total": self.counts.timeouts_total,
            "webhooks_scheduled": wh.scheduled,
            "webhooks_posted": wh.posted,
            "webhook_statuses_posted": wh.statuses_posted,
            "webhooks_failed": wh.failed,
            "webhooks_given_up": wh.given_up,
            "webhooks_pending": self.webhooks.pending,
            "contacts_checked_total": self.counts.contacts_checked_total,
            "contacts_requests_total": self.counts.contacts_requests_total,
        }
        if by_recipient:
            out["accepted_by_recipient"] = self.accepted_by_recipient
        return out


STATE_KEY = web.AppKey("simulator_state", SimulatorState)


# --------------------------------------------------------------------------- responses


def _error(state: SimulatorState, code: int, details: str | None = None) -> web.Response:
    state.rejected_by_code[code] += 1
    info = error_info(code)
    err: dict[str, Any] = {
        "message": f"(#{code}) {info.title}",
        "type": info.type,
        "code": code,
    }
    if info.subcode is not None:
        err["error_subcode"] = info.subcode
    err["error_data"] = {"messaging_product": "whatsapp", "details": details or info.details}
    err["fbtrace_id"] = secrets.token_urlsafe(16)
    return web.Response(
        body=json.dumps({"error": err}).encode(), status=info.http_status, content_type=_JSON
    )


def _success(to: str, wa_id: str, wamid: str) -> web.Response:
    # Hand-assembled (hot path); the wamid is base64url, the rest is escaped.
    body = (
        '{"messaging_product":"whatsapp","contacts":[{"input":'
        + json.dumps(to)
        + ',"wa_id":'
        + json.dumps(wa_id)
        + '}],"messages":[{"id":"'
        + wamid
        + '","message_status":"accepted"}]}'
    )
    return web.Response(body=body.encode(), content_type=_JSON)


def _validation_details(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- handlers


def _text_refused(text: str | None) -> bool:
    """The platform refuses a text parameter with a new-line, a tab or 5+ spaces (132018)."""
    return text is not None and ("\n" in text or "\t" in text or "     " in text)


def _template_refusal(state: SimulatorState, req: TemplateSendRequest) -> web.Response | None:
    """The template checks, in order: missing (132001), body parameter count (132000), text
    the platform refuses (132018). Component types are case-insensitive ("BODY")."""
    cfg = state.config
    template = req.template
    if template.name in cfg.missing_templates:
        return _error(
            state,
            132001,
            f"template name ({template.name}) does not exist in {template.language.code}",
        )
    expected = cfg.template_param_counts.get(template.name)
    if expected is not None:
        body = [c for c in template.components if c.type.lower() == "body"]
        given = sum(len(c.parameters) for c in body)
        if given != expected:
            return _error(
                state,
                132000,
                f"body: number of localizable_params ({given}) does not "
                f"match the expected number of params ({expected})",
            )
    params = (p for c in template.components for p in c.parameters)
    if any(_text_refused(p.text) for p in params):
        return _error(state, 132018, PARAM_TEXT_DETAILS)
    return None


def _accept(
    state: SimulatorState, req: TemplateSendRequest, digits: str, pnid: str, outcome: Outcome
) -> tuple[str, str]:
    """Counts an accepted send and schedules its webhooks; returns (wamid, wa_id)."""
    rules = state.config.outcomes
    state.counts.accepted_total += 1
    state.accepted_by_recipient[digits] = state.accepted_by_recipient.get(digits, 0) + 1
    wamid = state.new_wamid()
    wa_id = wa_id_for(digits, rules)
    if state.webhooks.enabled:
        later = outcome.kind is OutcomeKind.UNDELIVERABLE_LATER
        fail = outcome.code if outcome.kind is OutcomeKind.DELIVERY_FAILED or later else None
        msg = SentMessage(
            wamid,
            wa_id,
            req.biz_opaque_callback_data,
            pnid,
            fail,
            fail_only=later,
            user_id=rules.user_ids.get(digits),
        )
        skip = skips_delivered(digits, rules)
        state.webhooks.schedule_message(msg, read=reads(digits, rules), skip_delivered=skip)
    return wamid, wa_id


async def send_message(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cfg = state.config
    state.counts.requests_total += 1

    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or token.strip() != cfg.access_token:
        return _error(state, 190)

    try:
        req = TemplateSendRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        return _error(state, 100, _validation_details(exc))
    to = (req.to or "").lstrip("+")
    digits = to if to.isdigit() else "".join(ch for ch in to if ch.isdigit())
    if not digits:
        return _error(state, 100, "to: the recipient phone number is missing or has no digits")
    refused = _template_refusal(state, req)
    if refused is not None:
        return refused

    pnid = request.match_info["phone_number_id"]
    now = asyncio.get_running_loop().time()
    if not state.take_token(pnid, now):
        return _error(state, 130429)

    attempt_no = state.attempts.get(digits, 0) + 1
    state.attempts[digits] = attempt_no
    outcome = outcome_for(digits, cfg.outcomes, attempt_no)
    if not outcome.accepted:
        assert outcome.code is not None
        return _error(state, outcome.code)
    if cfg.pair_interval_s:
        last = state.last_accepted.get(digits)
        if last is not None and now - last < cfg.pair_interval_s:
            return _error(state, 131056)
        state.last_accepted[digits] = now

    wamid, wa_id = _accept(state, req, digits, pnid, outcome)
    if outcome.kind is OutcomeKind.ACCEPTED_ERROR:
        assert outcome.code is not None
        return _error(state, outcome.code)  # taken and counted above, answered as a failure
    if outcome.kind is OutcomeKind.TIMEOUT and cfg.timeout_hang_s > 0:
        state.counts.timeouts_total += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.closing.wait(), cfg.timeout_hang_s)
    return _success(req.to or digits, wa_id, wamid)


async def check_contacts(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cfg = state.config
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or token.strip() != cfg.access_token:
        return _error(state, 190)
    try:
        body = json.loads(await request.read())
        items = body["contacts"]
        assert isinstance(items, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        return _error(state, 100, "contacts: a list of phone numbers is required")
    wait = body.get("blocking", "no_wait") == "wait"
    state.counts.contacts_requests_total += 1
    state.counts.contacts_checked_total += len(items)
    out = [
        contacts.answer(
            item, mode=cfg.contacts_mode, rules=cfg.outcomes, wait=wait, seen=state.contacts_seen
        )
        for item in items
    ]
    return web.json_response({"contacts": out})


async def get_stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    by_recipient = request.query.get("by_recipient", "1") not in ("0", "false", "no")
    return web.json_response(state.stats(by_recipient=by_recipient))


async def post_reset(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    drop = request.query.get("drop_webhooks", "0") in ("1", "true", "yes")
    state.reset()
    state.webhooks.reset_counters(drop_pending=drop)
    return web.json_response({"ok": True})


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].config.summary())


async def post_config(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        updates = await request.json()
        if not isinstance(updates, dict):
            raise ValueError("expected a JSON object")
        new = apply_updates(state.config, updates)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    state.set_config(new)
    return web.json_response(new.summary())


def _digits_of(value: object) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit()) if value is not None else ""


async def post_inbound(request: web.Request) -> web.Response:
    """A user writes: ``{"from": digits, "text": "STOP", "phone_number_id": ...}``; a user
    known only by a username: ``{"from_user_id": "US.1234", ...}`` without ``from``."""
    state = request.app[STATE_KEY]
    try:
        data = await request.json()
        from_ = _digits_of(data.get("from"))
        user_id = str(data["from_user_id"]) if data.get("from_user_id") else None
        text = str(data.get("text", "STOP"))
        pnid = str(data.get("phone_number_id", "0"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return web.json_response({"error": f"bad inbound body: {exc}"}, status=400)
    if not from_ and not user_id:
        return web.json_response({"error": "from: no digits (and no from_user_id)"}, status=400)
    wamid = state.new_wamid()
    state.webhooks.schedule_inbound(from_ or None, text, pnid, wamid, data.get("name"), user_id)
    return web.json_response({"id": wamid, "webhooks": state.webhooks.enabled})


async def post_user_preferences(request: web.Request) -> web.Response:
    """A user stops or resumes marketing messages:
    ``{"wa_id": digits, "user_id": "US.1234", "value": "stop" | "resume", "phone_number_id"}``
    (``wa_id`` or ``user_id`` or both)."""
    state = request.app[STATE_KEY]
    try:
        data = await request.json()
        wa_id = _digits_of(data.get("wa_id")) or None
        user_id = str(data["user_id"]) if data.get("user_id") else None
        value = str(data.get("value", "stop"))
        pnid = str(data.get("phone_number_id", "0"))
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"error": f"bad user_preferences body: {exc}"}, status=400)
    if value not in ("stop", "resume") or not (wa_id or user_id):
        return web.json_response(
            {"error": "need value stop or resume, and wa_id or user_id"}, status=400
        )
    state.webhooks.schedule_preference(Preference(wa_id, user_id, value, pnid))
    return web.json_response({"ok": True, "webhooks": state.webhooks.enabled})


async def get_health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


# --------------------------------------------------------------------------- app


@web.middleware
async def graph_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths and methods answer as the Graph API does: a JSON error body."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        message = (
            f"Unsupported {request.method.lower()} request. Object with ID "
            f"'{request.path.strip('/')}' does not exist, cannot be loaded due to missing "
            "permissions, or does not support this operation"
        )
        err = {
            "message": message,
            "type": "GraphMethodException",
            "code": 100,
            "error_subcode": 33,
            "fbtrace_id": secrets.token_urlsafe(16),
        }
        return web.json_response({"error": err}, status=400)


def build_app(config: SimulatorConfig) -> web.Application:
    """The simulator application; webhook tasks start and stop with the app."""
    app = web.Application(client_max_size=1024 * 1024, middlewares=[graph_errors])
    app[STATE_KEY] = SimulatorState(config)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        state = app[STATE_KEY]
        await state.webhooks.start()
        yield
        await state.webhooks.stop()

    async def on_shutdown(app: web.Application) -> None:
        app[STATE_KEY].closing.set()  # release hanging TIMEOUT answers before the drain

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/{version}/{phone_number_id}/messages", send_message)
    app.router.add_post("/v1/contacts", check_contacts)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_post("/_sim/reset", post_reset)
    app.router.add_get("/_sim/config", get_config)
    app.router.add_post("/_sim/config", post_config)
    app.router.add_post("/_sim/inbound", post_inbound)
    app.router.add_post("/_sim/user_preferences", post_user_preferences)
    app.router.add_get("/_sim/health", get_health)
    return app
