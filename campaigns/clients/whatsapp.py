"""WhatsApp Cloud API client: one template send in, one ``SendResult`` out.

Transport choice (``bench/client_transport.py``: 200 concurrent sends, 200 connections,
local server in its own process, on a shared 2-core machine): httpx's own pool (httpcore
1.0) did 20-50 requests/s, httpx over ``httpx_aiohttp.AiohttpTransport`` 900-1,100, about
23x more. httpcore rescans every connection for every queued request on each request event
(``_assign_requests_to_connections``: millions of ``is_idle`` calls for a few hundred
requests), which is quadratic in the pool size we need for >= 1,000 messages/s. aiohttp's
connector does not. So the client keeps the httpx API (``MockTransport`` in tests,
timeouts, exceptions) and defaults to the aiohttp transport underneath.

Never raises for platform or network errors: they are data for ``campaigns.outcomes``.
The only exceptions are invalid arguments (a programming or data error, nothing was sent)
and cancellation. The token lives only in the ``Authorization`` header: it is hidden from
``repr`` and never logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from campaigns.dispatch import SendJob
from campaigns.outcomes import SendResult, TransportFailure

__all__ = [
    "CloudApiTransport",
    "WhatsAppClient",
    "WhatsAppEndpoint",
    "build_template_payload",
    "parse_response",
    "transport_failure_of",
]

log = logging.getLogger(__name__)

MAX_CALLBACK_DATA_CHARS = 512  # platform limit on biz_opaque_callback_data
# Idle connections are dropped client-side before common server keep-alive timeouts
# (uvicorn: 5 s). POST is never retried on a stale connection (not idempotent), so a
# server closing an idle connection as we write would turn a send into "outcome unknown".
KEEPALIVE_EXPIRY_S = 3.0
_MAX_TEXT_CHARS = 500  # bounded copies of platform text into results


@dataclass(frozen=True)
class WhatsAppEndpoint:
    """One sender: where to post and with which credentials."""

    base_url: str
    api_version: str
    phone_number_id: str
    token: str = field(repr=False)  # keep secrets out of logs, tracebacks and reprs

    @property
    def messages_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/{self.api_version}/{self.phone_number_id}/messages"


def _text_params(values: Sequence[str]) -> list[dict[str, str]]:
    return [{"type": "text", "text": v} for v in values]


def build_template_payload(
    *,
    to_e164: str,
    template: str,
    language: str,
    body_params: Sequence[str],
    header_params: Sequence[str] = (),
    button_url_params: Sequence[str] = (),
    callback_data: str,
) -> dict[str, Any]:
    """JSON body of a template send (provider-notes.md).

    ``to`` is the E.164 number without "+". Components appear only for non-empty lists.
    Each ``button_url_params`` entry fills the dynamic URL suffix of the button at that
    index (0, 1, ...). Raises ``ValueError`` for a malformed number or callback data.
    """
    to = to_e164.removeprefix("+")
    if not to.isdigit() or not to.isascii():
        raise ValueError("to_e164 must be an E.164 number")
    if len(callback_data) > MAX_CALLBACK_DATA_CHARS:
        raise ValueError(f"callback_data longer than {MAX_CALLBACK_DATA_CHARS} characters")
    components: list[dict[str, Any]] = []
    if body_params:
        components.append({"type": "body", "parameters": _text_params(body_params)})
    if header_params:
        components.append({"type": "header", "parameters": _text_params(header_params)})
    for index, value in enumerate(button_url_params):
        components.append(
            {
                "type": "button",
                "sub_type": "url",
                "index": str(index),
                "parameters": [{"type": "text", "text": value}],
            }
        )
    tmpl: dict[str, Any] = {"name": template, "language": {"code": language}}
    if components:
        tmpl["components"] = components
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": tmpl,
        "biz_opaque_callback_data": callback_data,
    }


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _as_str(value: object) -> str | None:
    return value[:_MAX_TEXT_CHARS] if isinstance(value, str) and value else None


def _first(value: object) -> Mapping[str, Any]:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return {}


def parse_response(status: int, body: bytes) -> SendResult:
    """Turn an HTTP answer into a ``SendResult``, tolerating any body shape."""
    try:
        doc: object = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        doc = None
    if not isinstance(doc, dict):
        snippet = body[:200].decode("utf-8", "replace").strip()
        return SendResult(
            http_status=status,
            error_title=None if 200 <= status < 300 else f"HTTP {status}",
            error_details=snippet or None,
        )
    error = doc.get("error")
    if isinstance(error, dict):
        data = error.get("error_data")
        details = data.get("details") if isinstance(data, dict) else None
        return SendResult(
            http_status=status,
            error_code=_as_int(error.get("code")),
            error_subcode=_as_int(error.get("error_subcode")),
            error_title=_as_str(error.get("message")) or _as_str(error.get("title")),
            error_details=_as_str(details) or _as_str(error.get("error_user_msg")),
        )
    return SendResult(
        wamid=_as_str(_first(doc.get("messages")).get("id")),
        wa_id=_as_str(_first(doc.get("contacts")).get("wa_id")),
        http_status=status,
    )


# Errors raised while obtaining a connection: the request bytes never left.
_HTTPX_BEFORE_SEND: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
    httpx.LocalProtocolError,
)
_AIOHTTP_BEFORE_SEND: tuple[type[Exception], ...] = (
    aiohttp.ClientConnectorError,  # DNS, refused, TLS handshake
    aiohttp.ConnectionTimeoutError,  # connect / pool-acquire timeout
    aiohttp.InvalidURL,
)


def transport_failure_of(exc: BaseException) -> TransportFailure:
    """CONNECT only when the request provably never left; anything else is AFTER_SEND.

    httpx_aiohttp maps every ``aiohttp.ClientConnectionError`` - including a server
    disconnect or reset *after* the request was written - to ``httpx.ConnectTimeout``, so
    the aiohttp cause (``__cause__``) decides when there is one.
    """
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        before = isinstance(cause, _AIOHTTP_BEFORE_SEND)
    elif isinstance(exc, aiohttp.ClientError):
        before = isinstance(exc, _AIOHTTP_BEFORE_SEND)
    else:
        before = isinstance(exc, _HTTPX_BEFORE_SEND)
    return TransportFailure.CONNECT if before else TransportFailure.AFTER_SEND


def _mask(e164: str) -> str:
    return e164[:-7] + "****" + e164[-3:] if len(e164) > 8 else "****"


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """httpx over aiohttp: see the module docstring for why."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    return AiohttpTransport(limits=limits)


class WhatsAppClient:
    """Async Cloud API client. One per worker process and event loop (it owns a pool)."""

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        max_connections: int = 200,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            transport=transport or default_transport(max_connections),
            timeout=httpx.Timeout(timeout_s),
            headers={"User-Agent": "wa-campaigns/0.1"},
            follow_redirects=False,  # never carry the bearer token to another host
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(timeout={self._http.timeout!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def send_template(
        self,
        endpoint: WhatsAppEndpoint,
        *,
        to_e164: str,
        template: str,
        language: str,
        body_params: Sequence[str],
        header_params: Sequence[str] = (),
        button_url_params: Sequence[str] = (),
        callback_data: str,
    ) -> SendResult:
        payload = build_template_payload(
            to_e164=to_e164,
            template=template,
            language=language,
            body_params=body_params,
            header_params=header_params,
            button_url_params=button_url_params,
            callback_data=callback_data,
        )
        headers = {"Authorization": f"Bearer {endpoint.token}"}
        try:
            response = await self._http.post(endpoint.messages_url, json=payload, headers=headers)
        except (httpx.TransportError, aiohttp.ClientError, OSError) as exc:
            # OSError/ClientError: raw errors httpx_aiohttp does not map.
            failure = transport_failure_of(exc)
            log.debug("send to %s: %s %s", _mask(to_e164), failure, type(exc).__name__)
            return SendResult(
                transport=failure,
                error_title=type(exc).__name__,
                error_details=_as_str(str(exc)),
            )
        return parse_response(response.status_code, response.content)

    async def aclose(self) -> None:
        await self._http.aclose()


class CloudApiTransport:
    """The dispatch port (``campaigns.dispatch.MessageTransport``) over the Cloud API client."""

    def __init__(self, client: WhatsAppClient, *, base_url: str, api_version: str, token: str):
        self._client = client
        self._base_url = base_url
        self._api_version = api_version
        self._token = token
        self._endpoints: dict[str, WhatsAppEndpoint] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    def _endpoint(self, sender_id: str) -> WhatsAppEndpoint:
        endpoint = self._endpoints.get(sender_id)
        if endpoint is None:
            endpoint = self._endpoints[sender_id] = WhatsAppEndpoint(
                self._base_url, self._api_version, sender_id, self._token
            )
        return endpoint

    async def send(self, job: SendJob) -> SendResult:
        return await self._client.send_template(
            self._endpoint(job.sender_id),
            to_e164=job.to_e164,
            template=job.template,
            language=job.language,
            body_params=job.body_params,
            callback_data=job.callback_data,
        )
