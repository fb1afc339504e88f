"""Listings are bounded: GET /campaigns is paged with counts from one query; the CSV export
holds no pooled connection while its reader stalls."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text

from campaigns.services import campaign_contacts
from campaigns.services import campaigns as campaign_service
from tests.integration.test_uploads import make_campaign, upload_bytes


def test_campaigns_are_paged_newest_first_by_keyset(api: TestClient, db: Engine) -> None:
    ids = [make_campaign(db) for _ in range(5)]
    first = api.get("/campaigns?limit=2")
    assert first.status_code == 200
    assert [c["id"] for c in first.json()] == ids[::-1][:2]
    link = first.headers["link"]
    assert link == f'</campaigns?after_id={ids[3]}&limit=2>; rel="next"'
    second = api.get(f"/campaigns?limit=2&after_id={ids[3]}").json()
    assert [c["id"] for c in second] == [ids[2], ids[1]]
    last = api.get(f"/campaigns?limit=2&after_id={ids[1]}")
    assert [c["id"] for c in last.json()] == [ids[0]]
    assert "link" not in last.headers  # a short page is the last one
    assert api.get("/campaigns?limit=501").status_code == 422
    assert api.get("/campaigns?limit=0").status_code == 422
    assert len(api.get("/campaigns").json()) == 5  # default page: 100


def test_a_page_costs_two_queries_whatever_its_size(db: Engine) -> None:
    for n in range(12):
        cid = make_campaign(db)
        if n % 3 == 0:
            upload_bytes(db, cid, b"phone\n+4915123456701\n+4915123456702\nnope\n")
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(db, "before_cursor_execute", count)
    try:
        page = campaign_service.list_campaigns(db, limit=10)
    finally:
        event.remove(db, "before_cursor_execute", count)
    assert len(page) == 10
    assert len(statements) == 2, statements  # the campaigns, then every count in one GROUP BY
    with_contacts = [c for c in page if c.total]
    assert with_contacts and all(c.counts["initial"] == 2 for c in with_contacts)
    assert all(c.counts["invalid_record"] == 1 and c.total == 3 for c in with_contacts)


def test_a_stalled_export_reader_holds_no_pooled_connection(db: Engine) -> None:
    cid = make_campaign(db)
    rows = "".join(f"+49151{i:08d}\n" for i in range(2_500))
    upload_bytes(db, cid, f"phone\n{rows}".encode(), max_rows=10_000, chunk_rows=5_000)
    checked_out_before = db.pool.checkedout()  # type: ignore[attr-defined]
    stream = campaign_contacts.export_contacts_csv(db, cid)
    first = next(stream)  # the reader takes one block and stalls
    assert first.startswith("line,phone_raw")
    assert db.pool.checkedout() == checked_out_before  # type: ignore[attr-defined]
    with db.connect() as conn:  # and no session of ours sits idle in a transaction
        idle = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert idle == 0
    body = first + "".join(stream)
    assert body.count("\r\n") == 2_501  # header + every contact, once
