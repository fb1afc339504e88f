"""WhatsApp Cloud API client: one template send in, one ``SendResult`` out.

Transport choice (``bench/client_transport.py``: 200 concurrent sends, 200 connections, a
local server in its own process, on a shared 2-core machine): httpx's own pool (httpcore
1.0) did 20-50 requests/s (it rescans every connection for every queued request: quadratic
in the pool size we need), httpx over ``httpx_aiohttp.AiohttpTransport`` 900-1,100, a bare
``aiohttp.ClientSession`` about half the client CPU per send of that, and the lean HTTP/1.1
client of :mod:`campaigns.clients.http1` less again (figures in BENCHMARKS.md). So
production sends go through ``http1``: the request head is built once per sender, a send is
its body's bytes; the httpx API stays for an injected ``transport`` (``httpx.MockTransport``
in tests, or any other httpx transport), with the same results and failure mapping.

Never raises for platform or network errors: they are data for ``campaigns.domain.outcomes``.
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

from campaigns.clients.http1 import Http1Pool, Origin, RequestNotSent, ResponseLost, request_head
from campaigns.domain.dispatch import SendJob
from campaigns.domain.outcomes import SendResult, TransportFailure
from campaigns.domain.parameters import clean_parameter

__all__ = [
    "CloudApiTransport",
    "WhatsAppClient",
    "WhatsAppEndpoint",
    "build_template_payload",
    "encode_payload",
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


def _text_params(values: Sequence[str], names: Sequence[str] = ()) -> list[dict[str, str]]:
    """Text parameters, cleaned as the platform accepts them (132018 otherwise)."""
    if not names:
        return [{"type": "text", "text": clean_parameter(v)} for v in values]
    return [
        {"type": "text", "parameter_name": name, "text": clean_parameter(v)}
        for name, v in zip(names, values, strict=True)
    ]


def build_template_payload(
    *,
    to_e164: str,
    template: str,
    language: str,
    body_params: Sequence[str],
    header_params: Sequence[str] = (),
    button_url_params: Sequence[str] = (),
    callback_data: str,
    param_names: Sequence[str] = (),
) -> dict[str, Any]:
    """JSON body of a template send (provider-notes.md).

    ``to`` is the E.164 number without "+". Components appear only for non-empty lists.
    Each ``button_url_params`` entry fills the dynamic URL suffix of the button at that
    index (0, 1, ...). ``param_names``: the template's named variables, one per body
    parameter (sent as ``parameter_name``); empty for positional ones. Every text value is
    cleaned (:func:`~campaigns.domain.parameters.clean_parameter`). Raises ``ValueError``
    for a malformed number or callback data, or names that do not match the parameters.
    """
    to = to_e164.removeprefix("+")
    if not to.isdigit() or not to.isascii():
        raise ValueError("to_e164 must be an E.164 number")
    if len(callback_data) > MAX_CALLBACK_DATA_CHARS:
        raise ValueError(f"callback_data longer than {MAX_CALLBACK_DATA_CHARS} characters")
    if param_names and len(param_names) != len(body_params):
        raise ValueError("param_names must name every body parameter")
    components: list[dict[str, Any]] = []
    if body_params:
        components.append({"type": "body", "parameters": _text_params(body_params, param_names)})
    if header_params:
        components.append({"type": "header", "parameters": _text_params(header_params)})
    for index, value in enumerate(button_url_params):
        components.append(
            {
                "type": "button",
                "sub_type": "url",
                "index": str(index),
                "parameters": [{"type": "text", "text": clean_parameter(value)}],
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


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """The JSON bytes of a request body (compact, UTF-8, as httpx's ``json=`` encodes)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


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
    message = _first(doc.get("messages"))
    contact = _first(doc.get("contacts"))
    return SendResult(
        wamid=_as_str(message.get("id")),
        wa_id=_as_str(contact.get("wa_id")),
        user_id=_as_str(contact.get("user_id")),
        message_status=_as_str(message.get("message_status")),
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

    The lean client says which with its two exceptions. httpx_aiohttp maps every
    ``aiohttp.ClientConnectionError`` - including a server disconnect or reset *after* the
    request was written - to ``httpx.ConnectTimeout``, so the aiohttp cause (``__cause__``)
    decides when there is one.
    """
    if isinstance(exc, RequestNotSent):
        return TransportFailure.CONNECT
    if isinstance(exc, ResponseLost):
        return TransportFailure.AFTER_SEND
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
    """httpx over aiohttp, for callers that want the httpx API without httpcore's pool."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    return AiohttpTransport(limits=limits)


_USER_AGENT = "wa-campaigns/0.1"


def _send_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


class WhatsAppClient:
    """Async Cloud API client. One per worker process and event loop (it owns a pool).

    Without ``transport`` it sends with the lean HTTP/1.1 pool of :mod:`~.http1`; with an
    httpx ``transport`` it sends through ``httpx.AsyncClient`` on that transport. Both give
    the same ``SendResult``s.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        max_connections: int = 200,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None
        self._pool: Http1Pool | None = None
        self._heads: dict[tuple[str, str], tuple[Origin, bytes]] = {}  # (url, token): head
        if transport is not None:
            self._http = httpx.AsyncClient(
                transport=transport,
                timeout=httpx.Timeout(timeout_s),
                headers={"User-Agent": _USER_AGENT},
                follow_redirects=False,  # never carry the bearer token to another host
            )
        else:
            # No redirects either (a 3xx is an answer like any other), and never a retry.
            self._pool = Http1Pool(
                max_connections=max_connections,
                keepalive_s=KEEPALIVE_EXPIRY_S,
                timeout_s=timeout_s,
            )

    def __repr__(self) -> str:
        backend = "httpx" if self._http is not None else "http1"
        return f"{type(self).__name__}(backend={backend}, timeout_s={self._timeout_s!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _head(self, url: str, token: str) -> tuple[Origin, bytes]:
        head = self._heads.get((url, token))
        if head is None:
            headers = {"User-Agent": _USER_AGENT, **_send_headers(token)}
            head = self._heads[(url, token)] = request_head(url, headers)
        return head

    async def _post(self, url: str, body: bytes, token: str) -> tuple[int, bytes]:
        if self._pool is None:
            assert self._http is not None
            response = await self._http.post(url, content=body, headers=_send_headers(token))
            return response.status_code, response.content
        origin, head = self._head(url, token)
        return await self._pool.post(origin, b"%s%d\r\n\r\n%s" % (head, len(body), body))

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
        param_names: Sequence[str] = (),
    ) -> SendResult:
        payload = build_template_payload(
            to_e164=to_e164,
            template=template,
            language=language,
            body_params=body_params,
            header_params=header_params,
            button_url_params=button_url_params,
            callback_data=callback_data,
            param_names=param_names,
        )
        try:
            status, content = await self._post(
                endpoint.messages_url, encode_payload(payload), endpoint.token
            )
        except (
            httpx.TransportError,
            aiohttp.ClientError,
            OSError,
            RequestNotSent,
            ResponseLost,
        ) as exc:
            # OSError (TimeoutError included)/ClientError: raw errors of an injected
            # transport, or ones httpx_aiohttp does not map.
            failure = transport_failure_of(exc)
            log.debug("send to %s: %s %s", _mask(to_e164), failure, type(exc).__name__)
            return SendResult(
                transport=failure,
                error_title=type(exc).__name__,
                error_details=_as_str(str(exc)),
            )
        return parse_response(status, content)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._pool is not None:
            await self._pool.aclose()


class CloudApiTransport:
    """The dispatch port (``MessageTransport``) over the Cloud API client."""

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
            param_names=job.param_names,
        )
