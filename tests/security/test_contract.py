"""The published contract (issue 17 item 8): every operation documents every refusal it can
answer with the {code, message} body; ids no bigint holds, NUL and blank names, and values
of the wrong JSON type are 422s, never 500s or silent coercions; 405 names every method."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from campaigns.api.app import create_app
from schemas.api import MAX_ID
from tests.integration.test_api import create_campaign

PROBLEM = {"$ref": "#/components/schemas/Problem"}
HUGE = 99999999999999999999  # beyond bigint


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    schema = create_app().openapi()
    return [
        (method.upper(), path, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if not path.startswith("/webhooks/whatsapp")  # the platform's: signed, no token
    ]


@pytest.mark.parametrize(("method", "path", "op"), _operations(), ids=lambda v: str(v)[:60])
def test_every_operation_documents_its_refusals(method: str, path: str, op: dict[str, Any]) -> None:
    responses = op["responses"]
    params = op.get("parameters", [])
    expected = {"401"}  # every operation but the webhooks is behind the bearer token
    if params or "requestBody" in op:
        expected.add("422")
    if any(p["in"] == "path" for p in params):
        expected.add("404")
    if "application/json" in op.get("requestBody", {}).get("content", {}):
        expected.add("400")
    assert expected <= set(responses), (method, path, sorted(responses))
    assert not any(status.startswith("5") for status in responses), (method, path)
    for status, response in responses.items():
        if status.startswith(("4", "5")):
            body = response["content"]["application/json"]["schema"]
            assert body == PROBLEM, (method, path, status)
            assert response["description"], (method, path, status)
    # Every id a path or query takes is bounded: beyond it is a 422, not a database error.
    for param in params:
        if param["schema"].get("type") == "integer" or "anyOf" in param["schema"]:
            bounded = [param["schema"], *param["schema"].get("anyOf", [])]
            ints = [s for s in bounded if s.get("type") == "integer"]
            assert all(s.get("maximum", MAX_ID + 1) <= MAX_ID for s in ints), (path, param)


def test_refusals_the_use_cases_raise_are_documented() -> None:
    paths = create_app().openapi()["paths"]
    upload = paths["/campaigns/{campaign_id}/uploads"]["post"]["responses"]
    assert {"400", "409", "413"} <= set(upload)
    assert "cannot show" in upload["400"]["description"]
    for command in ("start", "pause", "resume", "cancel", "retry"):
        assert "409" in paths[f"/campaigns/{{campaign_id}}/{command}"]["post"]["responses"]
    assert "409" in paths["/uploads/{upload_id}/retry"]["post"]["responses"]
    assert "412" in paths["/contacts/{phone}/profile"]["put"]["responses"]
    assert "HTTPValidationError" not in create_app().openapi()["components"]["schemas"]


def test_the_send_window_rule_is_in_the_schema() -> None:
    body = create_app().openapi()["components"]["schemas"]["CampaignCreate"]
    window, names = body["allOf"]
    both, neither = window["anyOf"]
    assert set(both["required"]) == {"send_window", "send_window_tz"}
    assert neither["properties"]["send_window_tz"] == {"type": "null"}
    zones = body["properties"]["send_window_tz"]["anyOf"][0]["enum"]
    assert "Europe/Berlin" in zones and "EST" not in zones
    assert "pattern" in body["properties"]["send_window"]["anyOf"][0]
    assert "pattern" in body["properties"]["name"]
    assert names["anyOf"][0] == {"properties": {"named_variables": {"const": False}}}


@pytest.mark.parametrize(
    "url",
    [
        f"/campaigns/{HUGE}",
        f"/campaigns/{2**63}/uploads",
        f"/campaigns/{MAX_ID + 1}",
        f"/uploads/{HUGE}",
        f"/campaigns/{HUGE}/contacts.csv",
        f"/campaigns/{HUGE}/errors",
        f"/campaigns/{HUGE}/suppressed",
        f"/campaigns?after_id={HUGE}",
        f"/contacts/schemas?before_id={HUGE}",
        f"/webhooks/report?campaign_id={HUGE}",
    ],
)
def test_ids_beyond_bigint_are_422(api: TestClient, url: str) -> None:
    response = api.get(url)
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"code", "message"}


def test_the_largest_id_is_a_plain_404(api: TestClient) -> None:
    response = api.get(f"/campaigns/{MAX_ID}")
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "campaign_not_found"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/campaigns/{cid}/contacts/remove", {"contact_ids": [HUGE]}),
        ("/campaigns/{cid}/contacts/remove", {"contact_ids": ["5"]}),
        ("/campaigns/{cid}/start", b"\xff\xfe not utf-8"),
        ("/campaigns", {"name": "Black\x00Friday", "region": "DE"}),
        ("/campaigns", {"name": " \u3000 ", "region": "DE"}),
        ("/campaigns", {"name": "ok", "region": "DE", "max_attempts": "5"}),
        ("/campaigns", {"name": "ok", "region": "DE", "require_opt_in": 0}),
        ("/campaigns", {"name": "ok", "region": "DE", "rate_per_s": "80"}),
        ("/campaigns", {"name": "ok", "region": "DE", "rate_per_s": 0.001}),  # would round to 0
        (
            "/campaigns",
            {
                "name": "ok",
                "region": "DE",
                "named_variables": True,
                "body_variables": ["First Name"],
            },
        ),
        ("/campaigns", {"name": "ok", "region": "DE", "body_variables": ["a\x00b"]}),
        ("/campaigns", {"name": "ok", "region": "DE", "send_window": "\u0661:00-20:00"}),
        ("/contacts/check", {"contacts": [], "force_check": 0}),
    ],
)
def test_what_the_schema_refuses_the_api_refuses(
    api: TestClient, path: str, body: dict[str, Any] | bytes
) -> None:
    cid = create_campaign(api)["id"]
    url = path.format(cid=cid)
    if isinstance(body, bytes):
        response = api.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code in (400, 422), response.text  # both documented
    else:
        response = api.post(url, json=body)
        assert response.status_code == 422, response.text
    assert set(response.json()) == {"code", "message"}


def test_an_integral_float_is_an_integer(api: TestClient) -> None:
    cid = create_campaign(api)["id"]
    response = api.post(f"/campaigns/{cid}/contacts/remove", json={"contact_ids": [7.0]})
    assert response.status_code == 200, response.text
    assert response.json()["items"][0]["result"] == "NOT_FOUND"
    created = api.post("/campaigns", json={"name": "f", "region": "DE", "max_attempts": 3.0})
    assert created.status_code == 201 and created.json()["max_attempts"] == 3


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/campaigns", "GET, POST"),
        ("/contacts/0", "DELETE, GET"),
        ("/contacts/schemas", "GET, POST"),
        ("/campaigns/1/uploads", "GET, POST"),
    ],
)
def test_405_names_every_method_of_the_path(api: TestClient, path: str, allowed: str) -> None:
    response = api.request("OPTIONS", path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["code"] == "method_not_allowed"
