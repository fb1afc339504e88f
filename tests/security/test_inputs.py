"""Bounded inputs: multipart uploads, CSV shape, NUL and control characters, bigint ids,
deeply nested webhook JSON, and uvicorn's concurrency and header limits."""

from __future__ import annotations

import codecs
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from campaigns.domain.csv_intake import RefusalCode, UploadRefused
from campaigns.runtime import stores as runtime
from campaigns.services.webhooks import apply as webhooks_apply
from campaigns.storage import webhooks as webhooks_db
from schemas.whatsapp import SIGNATURE_HEADER, sign_payload
from tests.conftest import API_TOKEN
from tests.integration.test_api import create_campaign
from tests.integration.test_uploads import make_campaign, spool_files, upload_bytes
from tests.security.support import serving

AUTH = f"Authorization: Bearer {API_TOKEN}\r\n"


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    return sock


def _status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(head.split(b" ", 2)[1]) if head else 0


# --------------------------------------------------------------------------- multipart


def _multipart_head(cid: int, boundary: str, extra: str = "") -> bytes:
    return (
        f"POST /campaigns/{cid}/uploads HTTP/1.1\r\nHost: test\r\n{AUTH}"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{extra}\r\n"
    ).encode()


def test_a_multipart_file_over_the_limit_is_refused_as_it_arrives(db: Engine) -> None:
    limit = 200_000
    with serving({"MAX_UPLOAD_BYTES": str(limit)}) as base:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_TOKEN}"}) as c:
            cid = c.post("/campaigns", json={"name": "m", "region": "DE"}).json()["id"]
        before = spool_files()
        sock = _connect(base)
        sock.sendall(_multipart_head(cid, "BOUND", "Transfer-Encoding: chunked\r\n"))
        part = (
            b'--BOUND\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
            b"Content-Type: text/csv\r\n\r\nphone\n"
        )
        sent = 0
        block = b"+4915123456789\n" * 4096  # 61,440 bytes
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        while sent <= limit:
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
            sent += len(block)
        # The body is far from over (no closing boundary, no last chunk): the refusal comes
        # now, from the bytes counted so far.
        assert _status(sock) == 413
        sock.close()
        time.sleep(0.2)
        assert spool_files() == before  # nothing of it kept


def test_a_declared_length_over_the_limit_is_refused_before_the_body(db: Engine) -> None:
    with serving({"MAX_UPLOAD_BYTES": "100000"}) as base:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_TOKEN}"}) as c:
            cid = c.post("/campaigns", json={"name": "m", "region": "DE"}).json()["id"]
        sock = _connect(base)
        sock.sendall(_multipart_head(cid, "B", "Content-Length: 10000000000\r\n"))
        assert _status(sock) == 413  # not one body byte was sent
        sock.close()


def test_multipart_refusals(api: TestClient, db: Engine) -> None:
    cid = create_campaign(api, body_variables=[])["id"]
    url = f"/campaigns/{cid}/uploads"
    two = api.post(
        url,
        files=[("file", ("a.csv", b"phone\n+4915123456789\n")), ("file", ("b.csv", b"phone\n"))],
    )
    assert two.status_code == 400 and "more than one `file` part" in two.json()["message"]
    none = api.post(url, files={"other": ("a.csv", b"phone\n")})
    assert none.status_code == 400 and none.json()["code"] == "empty_file"
    bad = api.post(url, content=b"x", headers={"Content-Type": "multipart/form-data"})
    assert bad.status_code == 400 and "boundary" in bad.json()["message"]
    ok = api.post(url, files={"file": ("guests.csv", b"phone\n+4915123456789\n", "text/csv")})
    assert ok.status_code == 202, ok.text
    assert ok.json()["filename"] == "guests.csv"
    # A NUL in the part's filename (Postgres text cannot hold it) is dropped, not a 500.
    raw = (
        b'--X\r\nContent-Disposition: form-data; name="file"; filename="gu\x00ests.csv"\r\n'
        b"\r\nphone\n+4915123456788\n\r\n--X--\r\n"
    )
    nul = api.post(url, content=raw, headers={"Content-Type": "multipart/form-data; boundary=X"})
    assert nul.status_code == 202, nul.text
    assert nul.json()["filename"] == "guests.csv"


# --------------------------------------------------------------------------- CSV shape


def test_a_header_over_max_csv_columns_is_refused_at_upload(api: TestClient) -> None:
    cid = create_campaign(api, body_variables=[])["id"]
    header = "phone" + ",a" * 16_384 + "\n"  # 16,385 columns, inside the 64 KiB head
    response = api.post(
        f"/campaigns/{cid}/uploads",
        content=(header + "+4915123456789\n").encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "too_many_columns"
    assert "16,384" in response.json()["message"]


@pytest.mark.parametrize(
    ("row", "code", "words"),
    [
        ("+4915123456789" + "," * 20_000, RefusalCode.TOO_MANY_COLUMNS, "more than 16,384 fields"),
        ("+4915123456789," + "a" * 5_000_000, RefusalCode.MALFORMED, "longer than"),
        ('+4915123456789,"never closed' + " x" * 3_000_000, RefusalCode.MALFORMED, "longer"),
    ],
)
def test_a_hostile_row_refuses_the_whole_file(
    db: Engine, row: str, code: RefusalCode, words: str
) -> None:
    cid = make_campaign(db)
    data = f"phone,note\n+4915123456701,ok\n{row}\n+4915123456702,ok\n".encode()
    done = upload_bytes(db, cid, data)
    assert done.status == "refused", done
    assert done.error is not None and words in done.error and "line 3" in done.error
    assert UploadRefused(code, "").code.value in {c.value for c in RefusalCode}
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM contacts")).scalar_one() == 0


def test_a_row_of_exactly_max_fields_is_fine(db: Engine) -> None:
    cid = make_campaign(db)
    data = ("phone,x\n+4915123456701" + ",v" * 16_383 + "\n").encode()
    assert upload_bytes(db, cid, data).status == "completed"


def test_a_nul_in_a_utf16_file_is_refused_not_failed(db: Engine) -> None:
    cid = make_campaign(db)
    # Past the 64 KiB head the upload was accepted for: found while reading, by the worker.
    rows = "".join(f"+49151234{i:05d},Anna\n" for i in range(3_000))
    text_ = f"phone,name\n{rows}+4915123456702,Jo\x00nas\n"
    data = codecs.BOM_UTF16_LE + text_.encode("utf-16-le")
    assert len(data) > 64 * 1024
    done = upload_bytes(db, cid, data, max_rows=10_000)
    assert done.status == "refused", done
    assert done.error is not None and "NUL" in done.error and "line 3002" in done.error


# --------------------------------------------------------------------------- 422s


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Black\x00Friday", "region": "DE"},
        {"name": "ok", "region": "DE", "body_variables": ["first\x00name"]},
        {"name": "ok", "region": "DE", "body_variables": ["first\nname"]},
        {"name": "tab\there", "region": "DE"},
        {"name": "ok", "region": "DE", "template": "t\x00"},
    ],
)
def test_nul_and_control_characters_in_a_campaign_are_422(api: TestClient, body: Any) -> None:
    response = api.post("/campaigns", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"
    assert "control characters" in response.json()["message"]


def test_ids_beyond_bigint_and_nul_in_query_values_are_422(api: TestClient) -> None:
    cid = create_campaign(api, body_variables=[])["id"]
    huge = 2**64
    remove = api.post(f"/campaigns/{cid}/contacts/remove", json={"contact_ids": [huge]})
    assert remove.status_code == 422, remove.text
    assert api.get(f"/campaigns/{cid}/contacts?after_id={huge}").status_code == 422
    assert api.get(f"/campaigns?after_id={huge}").status_code == 422
    for param in ("filename", "phone_column"):
        response = api.post(
            f"/campaigns/{cid}/uploads",
            params={param: "a\x00b.csv"},
            content=b"phone\n+4915123456789\n",
            headers={"Content-Type": "text/csv"},
        )
        assert response.status_code == 422, (param, response.text)


# --------------------------------------------------------------------------- webhooks

APP_SECRET = "app-secret-for-security-tests-0123"


@pytest.fixture
def signed_client(db: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from campaigns.api import webhooks as webhooks_api
    from campaigns.api.app import create_app

    monkeypatch.setenv("WHATSAPP_APP_SECRET", APP_SECRET)
    monkeypatch.setattr(webhooks_api._Kicker, "kick", lambda self, debounce_ms: None)
    runtime.reset()
    with TestClient(create_app()) as client:
        yield client
    monkeypatch.undo()
    runtime.reset()


def _post_signed(client: TestClient, body: bytes) -> Any:
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_payload(body, APP_SECRET)}
    return client.post("/webhooks/whatsapp", content=body, headers=headers)


@pytest.mark.parametrize("levels", [65, 2_000, 200_000])
def test_deeply_nested_signed_json_is_stored_as_rejected(
    signed_client: TestClient, db: Engine, levels: int
) -> None:
    body = (
        b'{"object": "whatsapp_business_account", "entry": ' + b"[" * levels + b"]" * levels + b"}"
    )
    response = _post_signed(signed_client, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "rejected"}
    with db.connect() as conn:
        status, reason = conn.execute(text("SELECT status, reason FROM webhook_inbox")).one()
    assert status == "rejected" and "nested deeper than 64 levels" in reason


def test_a_deep_body_in_the_inbox_is_rejected_by_the_applier(db: Engine) -> None:
    deep = b"[" * 5_000 + b"]" * 5_000
    fine = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()
    with db.begin() as conn:
        webhooks_db.insert_inbox_many(conn, [(deep, "pending", None), (fine, "pending", None)])
    stats = webhooks_apply.apply_inbox(db)
    assert stats.rejected == 1
    with db.connect() as conn:
        rows: dict[str, str] = dict(
            conn.execute(text("SELECT status, reason FROM webhook_inbox")).tuples().all()
        )
    assert set(rows) == {"rejected", "applied"}
    assert "nested deeper than 64 levels" in rows["rejected"]


# --------------------------------------------------------------------------- uvicorn


def test_an_oversized_request_head_is_refused(db: Engine) -> None:
    with serving({"HTTP_MAX_HEADER_BYTES": "8192"}) as base:
        sock = _connect(base)
        # 10 x 2 KB of headers, past the 8 KB limit, and the head never finished.
        padding = b"".join(b"X-Padding-%d: %s\r\n" % (i, b"p" * 2048) for i in range(10))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + padding)
        assert _status(sock) == 400
        sock.close()
        ok = _connect(base)
        ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Fine: " + b"f" * 4000 + b"\r\n\r\n")
        assert _status(ok) == 200
        ok.close()


def test_connections_over_the_concurrency_limit_get_503(db: Engine) -> None:
    with serving({"HTTP_LIMIT_CONCURRENCY": "3"}) as base:
        first = _connect(base)
        first.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _status(first) == 200
        idle = [_connect(base) for _ in range(3)]
        time.sleep(0.3)
        over = _connect(base)
        over.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _status(over) == 503
        for sock in (first, over, *idle):
            sock.close()
