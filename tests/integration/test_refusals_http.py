"""Every refusal of the HTTP API, the framework's own included, has one shape: exactly
``{"code", "message"}`` at the top level, with the status of its kind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from campaigns.api.errors import STATUS_OF_KIND
from campaigns.api.webhooks import MAX_BODY_BYTES
from campaigns.domain.refusals import RefusalKind
from campaigns.runtime import stores as runtime
from schemas.whatsapp import SIGNATURE_HEADER, sign_payload

SECRET = "app-secret-for-refusal-tests"
WEBHOOK = "/webhooks/whatsapp"
BODY = b'{"object": "whatsapp_business_account", "entry": []}'

Call = Callable[[TestClient], httpx.Response]


def _campaign(api: TestClient) -> int:
    body = {"name": "refusals", "template": "t", "region": "DE", "body_variables": []}
    response = api.post("/campaigns", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _upload(data: bytes) -> Call:
    return lambda api: api.post(f"/campaigns/{_campaign(api)}/uploads", content=data)


def _anonymous(method: str, path: str, auth: str | None = None) -> Call:
    def call(api: TestClient) -> httpx.Response:
        api.headers.pop("Authorization", None)
        headers = {"Authorization": auth} if auth else {}
        response: httpx.Response = api.request(method, path, headers=headers)
        return response

    return call


def _webhook(body: bytes, signature: str | None) -> Call:
    headers = {SIGNATURE_HEADER: signature} if signature else {}
    return lambda api: api.post(WEBHOOK, content=body, headers=headers)


def _unconfigured_webhook(api: TestClient) -> httpx.Response:
    runtime.resolve().settings.whatsapp_app_secret = SecretStr("")  # fresh_runtime forgets it
    response: httpx.Response = api.post(WEBHOOK, content=BODY, headers={SIGNATURE_HEADER: "x"})
    return response


def _oversized_upload(api: TestClient) -> httpx.Response:
    campaign = _campaign(api)
    runtime.resolve().settings.max_upload_bytes = 10  # fresh_runtime forgets it afterwards
    response: httpx.Response = api.post(
        f"/campaigns/{campaign}/uploads", content=b"phone\n+4915123456701\n"
    )
    return response


# (kind, status when the kind is not one of ours, code, call)
CASES: list[tuple[RefusalKind | None, int, str, Call]] = [
    (
        RefusalKind.INVALID,
        422,
        "invalid_request",
        lambda api: api.post("/campaigns", json={"name": "x", "region": "Germany"}),
    ),
    (RefusalKind.NOT_FOUND, 404, "campaign_not_found", lambda api: api.get("/campaigns/999999")),
    (
        RefusalKind.CONFLICT,
        409,
        "no_contacts",
        lambda api: api.post(f"/campaigns/{_campaign(api)}/start"),
    ),
    (RefusalKind.BAD_FILE, 400, "empty_file", _upload(b"")),
    (RefusalKind.TOO_LARGE, 413, "too_large", _oversized_upload),
    (RefusalKind.UNAUTHENTICATED, 401, "unauthenticated", _anonymous("GET", "/campaigns")),
    (
        RefusalKind.UNAUTHENTICATED,
        401,
        "invalid_token",
        _anonymous("GET", "/campaigns", "Bearer wrong-token"),
    ),
    (RefusalKind.UNAUTHENTICATED, 401, "signature_missing", _webhook(BODY, None)),
    (RefusalKind.FORBIDDEN, 403, "signature_invalid", _webhook(BODY, "sha256=" + "0" * 64)),
    (
        RefusalKind.FORBIDDEN,
        403,
        "subscription_refused",
        lambda api: api.get(WEBHOOK, params={"hub.mode": "subscribe", "hub.verify_token": "x"}),
    ),
    (
        RefusalKind.TOO_LARGE,
        413,
        "body_too_large",
        _webhook(b"x" * (MAX_BODY_BYTES + 1), sign_payload(b"x", SECRET)),
    ),
    (RefusalKind.UNAVAILABLE, 503, "webhook_not_configured", _unconfigured_webhook),
    (RefusalKind.NOT_FOUND, 404, "not_found", lambda api: api.get("/dashboard/static/x.js")),
    # The framework's own refusals.
    (None, 404, "not_found", lambda api: api.get("/no/such/path")),
    (None, 405, "method_not_allowed", lambda api: api.delete("/campaigns")),
    (
        None,
        422,
        "invalid_request",
        lambda api: api.get("/campaigns/1/contacts", params={"limit": 0}),
    ),
]


@pytest.fixture(autouse=True)
def fresh_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings changed by a test (env, a smaller upload limit) end with it."""
    yield
    monkeypatch.undo()
    runtime.reset()


@pytest.fixture
def signed(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("WHATSAPP_APP_SECRET", SECRET)
    monkeypatch.setenv("WHATSAPP_VERIFY_TOKEN", "the-verify-token")
    runtime.reset()
    return api


def _assert_refusal(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message"}, body
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.mark.parametrize(
    ("kind", "status", "code", "call"), CASES, ids=[f"{c[2]}-{c[1]}" for c in CASES]
)
def test_every_refusal_has_one_shape(
    signed: TestClient, kind: RefusalKind | None, status: int, code: str, call: Call
) -> None:
    if kind is not None:
        assert STATUS_OF_KIND[kind] == status  # the route answers with its kind's status
    response = call(signed)
    body = _assert_refusal(response, status, code)
    if code in {"unauthenticated", "invalid_token"}:
        assert response.headers["www-authenticate"] == "Bearer"
    if status == 405:
        assert response.headers["allow"]  # the framework's header is kept
    if code == "webhook_not_configured":
        assert "WHATSAPP_APP_SECRET" in body["message"]


def test_every_kind_but_if_match_is_answered_by_some_route() -> None:
    # No route takes If-Match yet (412); every other kind is exercised above.
    covered = {kind for kind, *_ in CASES if kind is not None}
    assert set(RefusalKind) - covered == {RefusalKind.PRECONDITION_FAILED}


def test_the_documented_problem_model_is_the_refusal_shape(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == {"code", "message"}
    assert set(problem["required"]) == {"code", "message"}
    refused = spec["paths"][WEBHOOK]["post"]["responses"]
    assert all(
        refused[s]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
        for s in ("401", "403", "413", "503")
    )
