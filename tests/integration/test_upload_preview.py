"""``POST /campaigns/{id}/uploads/preview``: a file's first rows as the upload will read them,
on the real stack; it stores nothing, and it agrees with the upload that follows."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from campaigns.services import uploads
from tests.integration.test_api import create_campaign, wait_for_upload

GOOD_AND_BAD = (
    "Telefon;first_name;code\n"
    "+4915123456701;Anna;A1\n"
    "0151 23456702;Jonas;B2\n"
    "nope;X;C3\n"
    "+4915123456701;Again;D4\n"
    "+4915123456703;;E5\n"
).encode("cp1252")


def _stored(db: Engine) -> tuple[int, int]:
    with db.connect() as conn:
        return (
            conn.execute(text("SELECT count(*) FROM uploads")).scalar_one(),
            conn.execute(text("SELECT count(*) FROM contacts")).scalar_one(),
        )


def test_preview_reads_the_layout_and_judges_each_row(api: TestClient, db: Engine) -> None:
    campaign = create_campaign(api, body_variables=["first_name"])
    response = api.post(
        f"/campaigns/{campaign['id']}/uploads/preview",
        content=GOOD_AND_BAD + "Müller".encode("cp1252"),  # cp1252 from its ü
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["encoding"], body["delimiter"], body["phone_column"]) == ("cp1252", ";", "Telefon")
    assert body["columns"] == ["Telefon", "first_name", "code"]
    assert body["variables"] == {"first_name": "first_name"}
    assert body["problems"] == []
    rows = [(r["line"], r["valid"], r["phone_e164"], r["reason_code"]) for r in body["rows"]]
    assert rows == [
        (2, True, "+4915123456701", None),
        (3, True, "+4915123456702", None),
        (4, False, None, "not_a_number"),
        (5, False, None, "duplicate"),
        (6, False, None, "missing_variable"),
        (7, False, None, "not_a_number"),
    ]
    assert body["rows"][2]["cells"] == ["nope", "X", "C3"]
    assert body["rows"][4]["reason"] == "missing template variable: first_name"
    assert body["rows"][5]["cells"] == ["Müller", "", ""]
    assert body["bytes_read"] == len(GOOD_AND_BAD) + 6
    assert _stored(db) == (0, 0)


def test_the_upload_agrees_with_its_preview(
    api: TestClient, db: Engine, ingest_worker: Any
) -> None:
    campaign = create_campaign(api, body_variables=["first_name"])
    preview = api.post(f"/campaigns/{campaign['id']}/uploads/preview", content=GOOD_AND_BAD)
    upload = api.post(f"/campaigns/{campaign['id']}/uploads", content=GOOD_AND_BAD)
    assert upload.status_code == 202, upload.text
    final = wait_for_upload(db, upload.json()["id"])
    shown = preview.json()
    assert (final["encoding"], final["delimiter"], final["phone_column"]) == (
        shown["encoding"],
        shown["delimiter"],
        shown["phone_column"],
    )
    page = api.get(f"/campaigns/{campaign['id']}/contacts", params={"limit": 100}).json()
    stored = {c["line"]: (c["state"] != "invalid_record", c["reason_code"]) for c in page["items"]}
    assert stored == {r["line"]: (r["valid"], r["reason_code"]) for r in shown["rows"]}


def test_a_missing_phone_column_lists_the_columns_and_a_chosen_one_is_used(
    api: TestClient, db: Engine
) -> None:
    campaign = create_campaign(api, body_variables=[])
    data = b"name,cell no\nAnna,+4915123456701\nJonas,0151 23456702\n"
    url = f"/campaigns/{campaign['id']}/uploads/preview"
    first = api.post(url, content=data).json()
    assert first["phone_column"] is None and first["columns"] == ["name", "cell no"]
    assert [p["code"] for p in first["problems"]] == ["no_phone_column"]
    assert [r["cells"] for r in first["rows"]] == [
        ["Anna", "+4915123456701"],
        ["Jonas", "0151 23456702"],
    ]
    assert {r["valid"] for r in first["rows"]} == {None}  # nothing to judge without a phone
    chosen = api.post(url, params={"phone_column": "cell no"}, content=data).json()
    assert chosen["phone_column"] == "cell no" and chosen["problems"] == []
    assert [r["phone_e164"] for r in chosen["rows"]] == ["+4915123456701", "+4915123456702"]
    unknown = api.post(url, params={"phone_column": "fax"}, content=data).json()
    assert [p["code"] for p in unknown["problems"]] == ["unknown_phone_column"]
    assert _stored(db) == (0, 0)


def test_a_variable_without_a_column_is_a_problem(api: TestClient) -> None:
    campaign = create_campaign(api, body_variables=["first_name", "code"])
    body = api.post(
        f"/campaigns/{campaign['id']}/uploads/preview",
        content=b"phone,First Name\n+4915123456701,A\n",
    ).json()
    assert body["variables"] == {"first_name": None, "code": None}
    [problem] = body["problems"]
    assert problem["code"] == "missing_variable_column"
    assert "rename 'First Name' to 'first_name'" in problem["message"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"PK\x03\x04xlsx", "not_text"),
        (b"name,email\nx,y\n", "no_phone_column"),
    ],
)
def test_a_file_the_upload_would_refuse_says_why(
    api: TestClient, db: Engine, data: bytes, code: str
) -> None:
    campaign = create_campaign(api, body_variables=[])
    response = api.post(f"/campaigns/{campaign['id']}/uploads/preview", content=data)
    assert response.status_code == 200, response.text
    assert [p["code"] for p in response.json()["problems"]] == [code]
    refused = api.post(f"/campaigns/{campaign['id']}/uploads", content=data)
    assert refused.status_code == 400 and refused.json()["code"] == code
    assert _stored(db) == (0, 0)


def test_a_file_refused_while_read_is_refused_with_the_preview_s_message(
    api: TestClient, db: Engine, ingest_worker: Any
) -> None:
    campaign = create_campaign(api, body_variables=[])
    data = b'phone\n+4915123456701\n"+4915123456702\n'
    [problem] = api.post(f"/campaigns/{campaign['id']}/uploads/preview", content=data).json()[
        "problems"
    ]
    assert problem["code"] == "malformed"
    upload = api.post(f"/campaigns/{campaign['id']}/uploads", content=data)
    assert upload.status_code == 202  # found while reading: the worker refuses it whole
    final = wait_for_upload(db, upload.json()["id"])
    assert (final["status"], final["error"]) == ("refused", problem["message"])
    assert _stored(db) == (1, 0)


def test_a_head_shows_only_whole_records(api: TestClient) -> None:
    campaign = create_campaign(api, body_variables=[])
    rows = "phone\n" + "".join(f"+49151234{n:05d}\n" for n in range(20000))
    data = rows.encode()
    assert len(data) > uploads.HEAD_BYTES
    url = f"/campaigns/{campaign['id']}/uploads/preview"
    whole = api.post(url, params={"rows": 50}, content=data).json()
    assert whole["bytes_read"] == uploads.HEAD_BYTES and whole["problems"] == []
    assert [r["line"] for r in whole["rows"]] == list(range(2, 52))
    # Only the first 64 KiB sent, cut in the middle of a record and of a quoted field.
    head = b'phone,note\n+4915123456701,"ok"\n+4915123456702,"cut he'
    cut = api.post(url, params={"truncated": "true"}, content=head).json()
    assert cut["problems"] == [] and [r["line"] for r in cut["rows"]] == [2]
    assert api.post(url, content=head).json()["problems"][0]["code"] == "malformed"


def test_a_campaign_that_takes_no_upload_now_is_a_problem(api: TestClient) -> None:
    campaign = create_campaign(api, body_variables=[])
    assert api.post(f"/campaigns/{campaign['id']}/cancel").status_code == 200
    body = api.post(
        f"/campaigns/{campaign['id']}/uploads/preview", content=b"phone\n+4915123456701\n"
    ).json()
    assert [p["code"] for p in body["problems"]] == ["upload_not_allowed"]
    missing = api.post("/campaigns/999/uploads/preview", content=b"phone\n")
    assert missing.status_code == 404 and missing.json()["code"] == "campaign_not_found"
    bad = api.post(f"/campaigns/{campaign['id']}/uploads/preview?rows=0", content=b"phone\n")
    assert bad.status_code == 422 and "query.rows" in bad.json()["message"]


def test_contacts_are_found_by_phone_in_any_format(
    api: TestClient, db: Engine, ingest_worker: Any
) -> None:
    campaign = create_campaign(api, body_variables=["first_name"])
    upload = api.post(f"/campaigns/{campaign['id']}/uploads", content=GOOD_AND_BAD)
    wait_for_upload(db, upload.json()["id"])
    url = f"/campaigns/{campaign['id']}/contacts"
    # The national spelling finds the contact and its duplicate row (the same person).
    found = api.get(url, params={"phone": "0151 23456701"}).json()["items"]
    assert [(c["line"], c["state"]) for c in found] == [(2, "initial"), (5, "invalid_record")]
    only_live = api.get(url, params={"phone": "+4915123456701", "state": "initial"}).json()
    assert [c["line"] for c in only_live["items"]] == [2]
    # A rejected row by its exact phone cell.
    rejected = api.get(url, params={"phone": "nope"}).json()["items"]
    assert [(c["line"], c["reason_code"]) for c in rejected] == [(4, "not_a_number")]
    assert api.get(url, params={"phone": "+4915999999999"}).json()["items"] == []


def test_contacts_and_their_export_narrow_to_one_upload(
    api: TestClient, db: Engine, ingest_worker: Any
) -> None:
    # The console's upload report: the first rejected rows of this upload, and all of them.
    campaign = create_campaign(api, body_variables=["first_name"])
    url = f"/campaigns/{campaign['id']}"
    first = api.post(f"{url}/uploads", content=GOOD_AND_BAD).json()["id"]
    wait_for_upload(db, first)
    second_file = b"phone,first_name\n+4915123456709,Z\nbroken,Y\n"
    second = api.post(f"{url}/uploads", content=second_file).json()["id"]
    wait_for_upload(db, second)
    rejected = {"state": "invalid_record"}
    every = api.get(f"{url}/contacts", params=rejected).json()["items"]
    assert len(every) == 4
    mine = api.get(f"{url}/contacts", params={**rejected, "upload_id": second}).json()["items"]
    assert [(c["line"], c["phone_raw"], c["reason_code"]) for c in mine] == [
        (3, "broken", "not_a_number")
    ]
    exported = api.get(f"{url}/contacts.csv", params={**rejected, "upload_id": first}).text
    assert len(exported.strip().splitlines()) == 1 + 3  # the header and the first's 3 rows
    assert "broken" not in exported
    assert api.get(f"{url}/contacts", params={"upload_id": -1}).status_code == 422
