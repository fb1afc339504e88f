"""WhatsApp client: payload shape, response parsing, transport failure mapping, secrecy."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import httpx
import pytest

from campaigns.clients.whatsapp import (
    CloudApiTransport,
    WhatsAppClient,
    WhatsAppEndpoint,
    build_template_payload,
    parse_response,
    transport_failure_of,
)
from campaigns.domain.dispatch import SendJob
from campaigns.domain.outcomes import OutcomeKind, SendResult, TransportFailure, classify

T = TypeVar("T")
TOKEN = "EAAG-secret-token-value"
ENDPOINT = WhatsAppEndpoint(
    base_url="https://graph.example.test/",
    api_version="v21.0",
    phone_number_id="1234",
    token=TOKEN,
)
Handler = Callable[[httpx.Request], httpx.Response]


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def _send(handler: Handler, **overrides: Any) -> SendResult:
    client = WhatsAppClient(transport=httpx.MockTransport(handler))
    kwargs: dict[str, Any] = {
        "to_e164": "+4915123456789",
        "template": "bf_offer",
        "language": "en",
        "body_params": ["Anna"],
        "callback_data": "attempt-1",
    }
    kwargs.update(overrides)
    try:
        return await client.send_template(ENDPOINT, **kwargs)
    finally:
        await client.aclose()


def send(handler: Handler, **overrides: Any) -> SendResult:
    return run(_send(handler, **overrides))


def respond(status: int, body: object = None, raw: bytes | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if raw is not None:
            return httpx.Response(status, content=raw)
        return httpx.Response(status, json=body)

    return handler


def raising(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)

    return handler


SUCCESS = {
    "messaging_product": "whatsapp",
    "contacts": [{"input": "4915123456789", "wa_id": "491512345678"}],
    "messages": [{"id": "wamid.HBgNabc", "message_status": "accepted"}],
}


def error_body(code: int, subcode: int | None = 2494010, details: str = "why") -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": f"(#{code}) Something",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


# --- payload -------------------------------------------------------------------------


def test_payload_full_shape() -> None:
    payload = build_template_payload(
        to_e164="+4915123456789",
        template="bf_offer",
        language="en",
        body_params=["Anna", "20%"],
        header_params=["Black Friday"],
        button_url_params=["abc"],
        callback_data="attempt-42",
    )
    assert payload == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "4915123456789",
        "type": "template",
        "template": {
            "name": "bf_offer",
            "language": {"code": "en"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Anna"},
                        {"type": "text", "text": "20%"},
                    ],
                },
                {"type": "header", "parameters": [{"type": "text", "text": "Black Friday"}]},
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": [{"type": "text", "text": "abc"}],
                },
            ],
        },
        "biz_opaque_callback_data": "attempt-42",
    }


def test_payload_without_params_has_no_components() -> None:
    payload = build_template_payload(
        to_e164="4915123456789",
        template="hello",
        language="de",
        body_params=[],
        callback_data="a",
    )
    assert payload["template"] == {"name": "hello", "language": {"code": "de"}}
    assert payload["to"] == "4915123456789"


def test_payload_only_header() -> None:
    payload = build_template_payload(
        to_e164="+1555",
        template="t",
        language="en",
        body_params=(),
        header_params=["H"],
        callback_data="a",
    )
    assert payload["template"]["components"] == [
        {"type": "header", "parameters": [{"type": "text", "text": "H"}]}
    ]


@pytest.mark.parametrize("bad", ["", "+", "+49 151", "+49-151", "abc", "+٤٩١٥١"])
def test_payload_rejects_non_e164(bad: str) -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        build_template_payload(
            to_e164=bad, template="t", language="en", body_params=[], callback_data="a"
        )


def test_payload_rejects_long_callback_data() -> None:
    with pytest.raises(ValueError, match="512"):
        build_template_payload(
            to_e164="+1555", template="t", language="en", body_params=[], callback_data="x" * 513
        )


def test_request_is_posted_with_bearer_and_json() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=SUCCESS)

    send(handler, body_params=["Anna"], button_url_params=["x1"])
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://graph.example.test/v21.0/1234/messages"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == build_template_payload(
        to_e164="+4915123456789",
        template="bf_offer",
        language="en",
        body_params=["Anna"],
        button_url_params=["x1"],
        callback_data="attempt-1",
    )


# --- responses -----------------------------------------------------------------------


def test_success_parse() -> None:
    result = send(respond(200, SUCCESS))
    assert result == SendResult(
        wamid="wamid.HBgNabc", wa_id="491512345678", message_status="accepted", http_status=200
    )
    assert classify(result, 1, 3).kind is OutcomeKind.SENT


@pytest.mark.parametrize("message_status", ["accepted", "held_for_quality_assessment", "paused"])
def test_message_status_and_user_id_are_read(message_status: str) -> None:
    body = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "US.13491208655302741918", "user_id": "US.13491208655302741918"}],
        "messages": [{"id": "wamid.HBgNxyz", "message_status": message_status}],
    }
    result = send(respond(200, body))
    assert (result.wamid, result.wa_id, result.user_id) == (
        "wamid.HBgNxyz",
        None,
        "US.13491208655302741918",
    )
    assert result.message_status == message_status
    assert result.held is (message_status == "held_for_quality_assessment")
    assert classify(result, 1, 3).kind is OutcomeKind.SENT


def test_named_parameters_carry_their_names() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=SUCCESS)

    send(handler, body_params=["Anna", "20%"], param_names=["first_name", "discount"])
    assert seen[0]["template"]["components"] == [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "first_name", "text": "Anna"},
                {"type": "text", "parameter_name": "discount", "text": "20%"},
            ],
        }
    ]
    with pytest.raises(ValueError, match="param_names"):
        build_template_payload(
            to_e164="+1555",
            template="t",
            language="en",
            body_params=["a", "b"],
            param_names=["only_one"],
            callback_data="x",
        )


def test_cloud_transport_passes_the_jobs_parameter_names() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=SUCCESS)

    async def main() -> SendResult:
        async with WhatsAppClient(transport=httpx.MockTransport(handler)) as client:
            transport = CloudApiTransport(
                client, base_url="https://graph.example", api_version="v21.0", token=TOKEN
            )
            job = SendJob(
                sender_id="1234",
                to_e164="+4915123456789",
                template="bf_offer",
                language="en",
                body_params=("Anna",),
                callback_data="attempt-9",
                param_names=("first_name",),
            )
            return await transport.send(job)

    assert run(main()).wamid == "wamid.HBgNabc"
    [param] = seen[0]["template"]["components"][0]["parameters"]
    assert param == {"type": "text", "parameter_name": "first_name", "text": "Anna"}


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        ("Anna\nMaria", "Anna Maria"),
        ("Anna\tMaria", "Anna Maria"),
        ("Anna     Maria", "Anna Maria"),  # five spaces: refused with 132018 as is
        ("  Anna \r\n\t Maria  ", "Anna Maria"),
        ("Anna\u00a0\u00a0Maria", "Anna Maria"),
        ("Anna    Maria", "Anna Maria"),
        ("Anna", "Anna"),
    ],
)
def test_every_sent_parameter_is_clean(raw: str, sent: str) -> None:
    payload = build_template_payload(
        to_e164="+4915123456789",
        template="t",
        language="en",
        body_params=[raw],
        header_params=[raw],
        button_url_params=[raw],
        callback_data="x",
    )
    texts = [p["text"] for c in payload["template"]["components"] for p in c["parameters"]]
    assert texts == [sent, sent, sent]


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, 131026, OutcomeKind.SENDING_FAILED),
        (400, 131050, OutcomeKind.SENDING_FAILED),
        (400, 132001, OutcomeKind.ERROR),
        (401, 190, OutcomeKind.ERROR),
        (429, 130429, OutcomeKind.RETRY),
        (400, 131056, OutcomeKind.RETRY),
        (500, 131000, OutcomeKind.RETRY),
        (503, 2, OutcomeKind.RETRY),
    ],
)
def test_error_body_parse(status: int, code: int, kind: OutcomeKind) -> None:
    result = send(respond(status, error_body(code, details=f"details of {code}")))
    assert result == SendResult(
        http_status=status,
        error_code=code,
        error_subcode=2494010,
        error_title=f"(#{code}) Something",
        error_details=f"details of {code}",
    )
    assert classify(result, 1, 3).kind is kind


def test_error_body_with_missing_fields() -> None:
    result = send(respond(400, {"error": {"message": "odd"}}))
    assert result == SendResult(http_status=400, error_title="odd")
    assert classify(result, 1, 3).kind is OutcomeKind.ERROR


def test_error_code_given_as_string_and_no_subcode() -> None:
    body = error_body(131026, subcode=None)
    body["error"]["code"] = "131026"
    result = send(respond(400, body))
    assert result.error_code == 131026
    assert result.error_subcode is None


def test_non_json_502() -> None:
    result = send(respond(502, raw=b"<html>Bad Gateway</html>"))
    assert result.http_status == 502
    assert result.error_code is None
    assert result.error_title == "HTTP 502"
    assert result.error_details == "<html>Bad Gateway</html>"
    assert classify(result, 1, 3).kind is OutcomeKind.RETRY


def test_401_empty_body_pauses() -> None:
    result = send(respond(401, raw=b""))
    decision = classify(result, 1, 3)
    assert decision.kind is OutcomeKind.ERROR
    assert decision.pause_campaign


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": "nope", "contacts": [1]},
        {"messages": [{"id": 5}]},
        [SUCCESS],
    ],
)
def test_200_with_odd_body_has_no_wamid(body: object) -> None:
    result = send(respond(200, body))
    assert result.wamid is None
    assert classify(result, 1, 3).kind is OutcomeKind.UNKNOWN


def test_parse_response_invalid_utf8() -> None:
    result = parse_response(500, b"\xff\xfe\x00garbage")
    assert result.http_status == 500
    assert result.error_code is None


# --- transport failures --------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_failures_before_sending_are_connect(exc_type: type[httpx.TransportError]) -> None:
    result = send(raising(exc_type))
    assert result.transport is TransportFailure.CONNECT
    assert result.error_title == exc_type.__name__
    assert classify(result, 1, 3).kind is OutcomeKind.RETRY


@pytest.mark.parametrize(
    "exc_type",
    [
        httpx.ReadTimeout,
        httpx.WriteTimeout,
        httpx.WriteError,
        httpx.ReadError,
        httpx.RemoteProtocolError,
        httpx.TimeoutException,
    ],
)
def test_failures_after_sending_are_unknown(exc_type: type[httpx.TransportError]) -> None:
    result = send(raising(exc_type))
    assert result.transport is TransportFailure.AFTER_SEND
    assert classify(result, 1, 3).kind is OutcomeKind.UNKNOWN


def _mapped(httpx_type: type[Exception], cause: BaseException) -> Exception:
    # httpx_aiohttp re-raises aiohttp errors as httpx errors "from" the original.
    exc = httpx_type("mapped")
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # httpx_aiohttp maps every ClientConnectionError to ConnectTimeout: the cause decides.
        (_mapped(httpx.ConnectTimeout, aiohttp.ServerDisconnectedError()), "after_send"),
        (_mapped(httpx.ConnectTimeout, aiohttp.ClientOSError(104, "reset")), "after_send"),
        (_mapped(httpx.ConnectTimeout, aiohttp.ConnectionTimeoutError()), "connect"),
        (_mapped(httpx.ReadTimeout, aiohttp.SocketTimeoutError()), "after_send"),
        (_mapped(httpx.ReadError, aiohttp.ClientPayloadError()), "after_send"),
        (aiohttp.ServerDisconnectedError(), "after_send"),
        (OSError("raw"), "after_send"),
    ],
)
def test_aiohttp_causes(exc: Exception, expected: str) -> None:
    assert transport_failure_of(exc) == expected


# The lean client on real sockets: tests/integration/test_http1.py.


# --- secrets -------------------------------------------------------------------------


def test_token_hidden_from_repr_and_str() -> None:
    client = WhatsAppClient(transport=httpx.MockTransport(respond(200, SUCCESS)))
    try:
        for text in (repr(ENDPOINT), str(ENDPOINT), repr(client), str(client)):
            assert TOKEN not in text
        assert "1234" in repr(ENDPOINT)  # the rest stays visible for debugging
    finally:
        run(client.aclose())


def test_token_not_logged_on_failure(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        result = send(raising(httpx.ConnectError))
    assert result.transport is TransportFailure.CONNECT
    assert TOKEN not in caplog.text
    assert "4915123456789" not in caplog.text  # phone numbers are masked in logs
    assert TOKEN not in repr(result)
