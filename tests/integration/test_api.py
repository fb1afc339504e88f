"""The HTTP API on real Postgres, Redis and a Celery ingest worker."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from campaigns.runtime.stores import resolve
from campaigns.services import tokens, uploads

CSV = b"phone,first_name\n+4915123456701,Anna\n0151 23456702,Jonas\nnope,X\n"


def create_campaign(api: TestClient, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": "Black Friday",
        "template": "bf_offer",
        "language": "en",
        "region": "DE",
        "body_variables": ["first_name"],
        **overrides,
    }
    response = api.post("/campaigns", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def wait_for_upload(engine: Engine, upload_id: int) -> dict[str, Any]:
    runtime = resolve()
    updates = list(uploads.follow_upload(engine, runtime.redis_url, upload_id, recheck_s=0.5))
    return updates[-1].model_dump(mode="json")


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz"])
def test_every_route_needs_a_valid_bearer_token(api: TestClient, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    api.headers.pop("Authorization")
    for method, path in [
        ("get", "/campaigns"),
        ("get", "/campaigns/1"),
        ("post", "/campaigns"),
        ("get", "/uploads/1"),
        ("get", "/campaigns/1/contacts.csv"),
    ]:
        response = api.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


def test_created_token_is_accepted_and_only_its_hash_stored(db: Engine, api: TestClient) -> None:
    created = tokens.create_api_token(db, "ops")
    api.headers.pop("Authorization")
    ok = api.get("/campaigns", headers={"Authorization": f"Bearer {created.token}"})
    assert ok.status_code == 200
    from sqlalchemy import text

    with db.connect() as conn:
        stored = conn.execute(text("SELECT token_sha256 FROM api_tokens")).scalar_one()
    assert created.token not in stored and len(stored) == 64


def test_upload_raw_body_end_to_end(api: TestClient, db: Engine, ingest_worker: Any) -> None:
    campaign = create_campaign(api)
    response = api.post(
        f"/campaigns/{campaign['id']}/uploads?filename=bf.csv",
        content=CSV,
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 202, response.text
    upload = response.json()
    assert response.headers["location"] == f"/uploads/{upload['id']}"
    assert upload["phone_column"] == "phone" and upload["filename"] == "bf.csv"
    wait_for_upload(db, upload["id"])
    report = api.get(f"/uploads/{upload['id']}").json()
    assert (report["status"], report["valid"], report["invalid"]) == ("completed", 2, 1)
    assert report["reasons"] == {"not_a_number": 1}
    status = api.get(f"/campaigns/{campaign['id']}").json()
    assert status["counts"]["initial"] == 2 and status["counts"]["invalid_record"] == 1
    page = api.get(
        f"/campaigns/{campaign['id']}/contacts", params={"state": "invalid_record"}
    ).json()
    assert [(c["line"], c["phone_raw"], c["reason"]) for c in page["items"]] == [
        (4, "nope", "not a phone number")
    ]
    exported = api.get(f"/campaigns/{campaign['id']}/contacts.csv").text.splitlines()
    assert len(exported) == 4 and exported[0].startswith("line,phone_raw,phone_e164,state")


def test_upload_multipart(api: TestClient, db: Engine, ingest_worker: Any) -> None:
    campaign = create_campaign(api)
    response = api.post(
        f"/campaigns/{campaign['id']}/uploads", files={"file": ("list.csv", CSV, "text/csv")}
    )
    assert response.status_code == 202, response.text
    final = wait_for_upload(db, response.json()["id"])
    assert (final["filename"], final["status"], final["valid"]) == ("list.csv", "completed", 2)


def test_contacts_paging_is_stable(api: TestClient, db: Engine, ingest_worker: Any) -> None:
    campaign = create_campaign(api, body_variables=[])
    rows = "phone\n" + "".join(f"+4915123456{n:03d}\n" for n in range(25))
    upload = api.post(f"/campaigns/{campaign['id']}/uploads", content=rows.encode()).json()
    wait_for_upload(db, upload["id"])
    seen: list[int] = []
    after = 0
    while True:
        page = api.get(
            f"/campaigns/{campaign['id']}/contacts", params={"after_id": after, "limit": 10}
        ).json()
        seen += [c["line"] for c in page["items"]]
        if page["next_after_id"] is None:
            break
        after = page["next_after_id"]
    assert seen == list(range(2, 27))


@pytest.mark.parametrize(
    ("data", "http_status", "code"),
    [
        (b"", 400, "empty_file"),
        (b"\x00\x01\x02\x03binary\x00", 400, "not_text"),
        (b"name,email\nx,y\n", 400, "no_phone_column"),
    ],
)
def test_refused_upload_answers_4xx_and_stores_nothing(
    api: TestClient, db: Engine, data: bytes, http_status: int, code: str
) -> None:
    campaign = create_campaign(api)
    response = api.post(f"/campaigns/{campaign['id']}/uploads", content=data)
    assert response.status_code == http_status
    assert response.json()["code"] == code and response.json()["message"]
    assert api.get(f"/campaigns/{campaign['id']}").json()["total"] == 0
    assert uploads.list_uploads(db, campaign["id"]) == []


def test_oversized_upload_gets_413(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    campaign = create_campaign(api)
    monkeypatch.setattr(resolve().settings, "max_upload_bytes", 20)
    response = api.post(f"/campaigns/{campaign['id']}/uploads", content=CSV)
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


def test_unknown_campaign_and_bad_body(api: TestClient) -> None:
    missing = api.get("/campaigns/999")
    assert missing.status_code == 404 and missing.json()["code"] == "campaign_not_found"
    bad = api.post("/campaigns", json={"name": "x", "region": "Germany"})
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_request"
    assert bad.json()["message"].startswith("body.region: String should match pattern")
    query = api.get("/campaigns/1/contacts?limit=0")
    assert query.status_code == 422 and query.json()["code"] == "invalid_request"
    assert "query.limit" in query.json()["message"]


def test_named_variables_are_kept_and_their_names_checked(api: TestClient) -> None:
    named = create_campaign(api, body_variables=["first_name", "code2"], named_variables=True)
    assert named["named_variables"] is True
    assert api.get(f"/campaigns/{named['id']}").json()["named_variables"] is True
    assert create_campaign(api)["named_variables"] is False
    bad = api.post(
        "/campaigns",
        json={
            "name": "x",
            "region": "DE",
            "body_variables": ["First Name"],
            "named_variables": True,
        },
    )
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"
    assert "First Name" in bad.json()["message"]


def test_openapi_documents_the_routes(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    assert {
        "/campaigns",
        "/campaigns/{campaign_id}/uploads",
        "/uploads/{upload_id}",
        "/campaigns/{campaign_id}/contacts",
        "/campaigns/{campaign_id}/contacts.csv",
    } <= set(spec["paths"])
    upload_body = spec["paths"]["/campaigns/{campaign_id}/uploads"]["post"]["requestBody"][
        "content"
    ]
    assert {"text/csv", "multipart/form-data"} <= set(upload_body)
