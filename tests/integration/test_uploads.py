"""Upload and validation on the real (embedded) Postgres."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from campaigns.domain.admin import CommandRefused
from campaigns.domain.csv_intake import RefusalCode, UploadRefused
from campaigns.domain.registry import Change
from campaigns.domain.states import CampaignStatus
from campaigns.runtime.stores import resolve
from campaigns.services import campaign_contacts, uploads
from campaigns.services import campaigns as campaign_service
from campaigns.storage import campaign_contacts as contacts_db
from campaigns.storage import uploads as uploads_db
from schemas.api import CampaignCreate, UploadOut
from tests.integration.registry_support import learn

DE_A = "+4915123456701"
DE_B = "+4915123456702"
DE_C = "+4915123456703"


def make_campaign(engine: Engine, *, variables: tuple[str, ...] = (), region: str = "DE") -> int:
    body = CampaignCreate(
        name="t", template="bf_offer", region=region, body_variables=list(variables)
    )
    return campaign_service.create_campaign(engine, body).id


def upload_bytes(
    engine: Engine,
    campaign_id: int,
    data: bytes,
    *,
    max_rows: int = 1000,
    chunk_rows: int = 1000,
    phone_column: str | None = None,
    **kwargs: Any,
) -> UploadOut:
    settings = resolve().settings
    spooled = uploads.spool_upload(iter([data]), settings.spool_dir, max_bytes=10_000_000)
    upload = uploads.register_upload(
        engine, campaign_id, spooled, filename="t.csv", phone_column=phone_column
    )
    return uploads.run_ingest(engine, upload.id, max_rows=max_rows, chunk_rows=chunk_rows, **kwargs)


def contacts(engine: Engine, campaign_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT line_no, phone_raw, phone_e164, state, reason_code, reason, variables "
                "FROM contacts WHERE campaign_id = :c ORDER BY upload_id, line_no"
            ),
            {"c": campaign_id},
        ).mappings()
        return [dict(r) for r in rows]


def contact_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM contacts")).scalar_one())


def spool_files() -> list[Path]:
    return sorted(resolve().settings.spool_dir.glob("*.csv"))


BASIC = f"phone;first_name\n{DE_A};Anna\n0151 23456702;Jonas\n".encode()


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("utf-8", f"phone,first_name\n{DE_A},Zoë\n0151 23456702,Jonas\n".encode()),
        (
            "utf-8-bom",
            codecs.BOM_UTF8 + f"phone,first_name\n{DE_A},Zoë\n0151 23456702,Jonas\n".encode(),
        ),
        ("utf-16le", f"phone\tfirst_name\n{DE_A}\tZoë\n0151 23456702\tJonas\n".encode("utf-16")),
        (
            "utf-16be",
            codecs.BOM_UTF16_BE
            + f"phone,first_name\n{DE_A},Zoë\n0151 23456702,Jonas\n".encode("utf-16-be"),
        ),
        ("cp1252", f"Telefon;first_name\n{DE_A};Zoë\n0151 23456702;Jonas\n".encode("cp1252")),
        ("pipe", f"msisdn|first_name\n{DE_A}|Zoë\n0151 23456702|Jonas\n".encode()),
        (
            "crlf-quoted",
            f'"Guest phone number","first_name"\r\n"{DE_A}","Zoë"\r\n"0151 23456702","Jonas"\r\n'.encode(),
        ),
    ],
)
def test_each_supported_format_is_stored(db: Engine, name: str, data: bytes) -> None:
    campaign_id = make_campaign(db)
    upload = upload_bytes(db, campaign_id, data)
    assert upload.status == "completed", upload.error
    assert (upload.rows_read, upload.valid, upload.invalid) == (2, 2, 0)
    rows = contacts(db, campaign_id)
    assert [(r["line_no"], r["phone_e164"], r["state"]) for r in rows] == [
        (2, DE_A, "initial"),
        (3, DE_B, "initial"),
    ]
    assert rows[0]["variables"] == {"first_name": "Zoë"}
    assert spool_files() == []  # the spooled copy is removed once stored


def test_quoted_fields_with_newlines_and_quotes(db: Engine) -> None:
    campaign_id = make_campaign(db)
    data = f'phone,note\n{DE_A},"two\nlines, and ""quotes"""\n{DE_B},plain\n'.encode()
    upload = upload_bytes(db, campaign_id, data)
    rows = contacts(db, campaign_id)
    assert upload.valid == 2
    assert rows[0]["variables"] == {"note": 'two\nlines, and "quotes"'}
    assert rows[1]["line_no"] == 3  # record numbers, as a spreadsheet counts rows


def test_invalid_rows_keep_line_and_reason(db: Engine) -> None:
    campaign_id = make_campaign(db, variables=("first_name",))
    data = (
        f"phone,first_name\n{DE_A},Anna\n,Empty\nnot a number,X\n+49 123,Short\n{DE_B},\n"
    ).encode()
    upload = upload_bytes(db, campaign_id, data)
    assert (upload.valid, upload.invalid) == (1, 4)
    rows = {r["line_no"]: r for r in contacts(db, campaign_id)}
    assert rows[2]["state"] == "initial"
    assert {n: rows[n]["state"] for n in (3, 4, 5, 6)} == dict.fromkeys(
        (3, 4, 5, 6), "invalid_record"
    )
    assert rows[3]["reason"] == "empty phone"
    assert rows[4]["reason_code"] == "not_a_number"
    assert rows[5]["reason_code"] == "invalid_number"
    assert rows[6]["reason"] == "missing template variable: first_name"
    assert sum(upload.reasons.values()) == 4


def test_duplicates_keep_the_first_within_and_across_uploads(db: Engine) -> None:
    campaign_id = make_campaign(db)
    first = upload_bytes(
        db, campaign_id, f"phone\n{DE_A}\n0151 23456701\n{DE_B}\n".encode(), chunk_rows=2
    )
    assert (first.valid, first.invalid, first.reasons) == (2, 1, {"duplicate": 1})
    second = upload_bytes(db, campaign_id, f"phone\n{DE_C}\n+49 151 23456702\n".encode())
    assert (second.valid, second.invalid) == (1, 1)
    rows = contacts(db, campaign_id)
    reasons = [r["reason"] for r in rows if r["state"] == "invalid_record"]
    assert reasons == ["duplicate of line 2", f"duplicate of line 4 of upload {first.id}"]
    assert [r["phone_e164"] for r in rows if r["state"] == "initial"] == [DE_A, DE_B, DE_C]


def test_opted_out_phone_is_rejected(db: Engine) -> None:
    campaign_id = make_campaign(db)
    learn(db, DE_B, Change.OPTED_OUT, source="test")
    upload = upload_bytes(db, campaign_id, BASIC)
    assert upload.reasons == {"opted_out": 1}
    assert [r["reason"] for r in contacts(db, campaign_id)] == [None, "opted out"]


@pytest.mark.parametrize(
    ("data", "code", "phrase"),
    [
        (b"", RefusalCode.EMPTY_FILE, "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00", RefusalCode.NOT_TEXT, "text"),
        (b"name,email\nAnna,a@example.com\n", RefusalCode.NO_PHONE_COLUMN, "phone"),
    ],
)
def test_refused_files_store_nothing(
    db: Engine, data: bytes, code: RefusalCode, phrase: str
) -> None:
    campaign_id = make_campaign(db)
    with pytest.raises(UploadRefused) as refused:
        upload_bytes(db, campaign_id, data)
    assert refused.value.code is code
    assert phrase in refused.value.message.lower()
    assert contact_count(db) == 0
    assert uploads.list_uploads(db, campaign_id) == []
    assert spool_files() == []


def test_missing_variable_column_is_refused(db: Engine) -> None:
    campaign_id = make_campaign(db, variables=("first_name", "code"))
    with pytest.raises(UploadRefused) as refused:
        upload_bytes(db, campaign_id, b"phone,first_name\n+4915123456701,Anna\n")
    assert refused.value.code is RefusalCode.MISSING_VARIABLE_COLUMN
    assert "code" in refused.value.message
    assert contact_count(db) == 0


def test_too_large_is_refused_while_streaming(db: Engine) -> None:
    spool_dir = resolve().settings.spool_dir
    with pytest.raises(UploadRefused) as refused:
        uploads.spool_upload(iter([b"phone\n", b"1" * 100]), spool_dir, max_bytes=50)
    assert refused.value.code is RefusalCode.TOO_LARGE
    assert spool_files() == []


def test_too_many_rows_refuses_the_whole_file_after_chunks_were_stored(db: Engine) -> None:
    campaign_id = make_campaign(db)
    data = "phone\n" + "".join(f"+4915123456{n:03d}\n" for n in range(25))
    upload = upload_bytes(db, campaign_id, data.encode(), max_rows=20, chunk_rows=5)
    assert upload.status == "refused"
    assert upload.error is not None and "20" in upload.error
    assert (upload.rows_read, upload.valid, upload.invalid) == (0, 0, 0)
    assert contact_count(db) == 0
    assert spool_files() == []


def test_interrupted_upload_resumes_without_duplicates(db: Engine) -> None:
    campaign_id = make_campaign(db)
    data = "phone,n\n" + "".join(f"+4915123456{n:03d},{n}\n" for n in range(30))
    settings = resolve().settings
    spooled = uploads.spool_upload(iter([data.encode()]), settings.spool_dir, max_bytes=10**6)
    upload = uploads.register_upload(db, campaign_id, spooled, filename="t.csv")
    chunks_seen: list[int] = []

    def crash_after_two_chunks(progress: UploadOut) -> None:
        chunks_seen.append(progress.rows_read)
        if len(chunks_seen) == 2:
            raise ConnectionError("worker lost its database mid-upload")

    with pytest.raises(ConnectionError):
        uploads.run_ingest(
            db, upload.id, max_rows=100, chunk_rows=7, on_progress=crash_after_two_chunks
        )
    failed = uploads.get_upload(db, upload.id)
    assert failed.status == "failed"
    assert "ConnectionError" in (failed.error or "")
    assert contact_count(db) == 14  # two chunks were committed

    uploads.mark_upload_for_retry(db, upload.id)
    done = uploads.run_ingest(db, upload.id, max_rows=100, chunk_rows=7)
    assert done.status == "completed"
    assert (done.rows_read, done.valid, done.invalid) == (30, 30, 0)
    rows = contacts(db, campaign_id)
    assert [r["line_no"] for r in rows] == list(range(2, 32))


def test_a_second_run_of_a_finished_upload_changes_nothing(db: Engine) -> None:
    campaign_id = make_campaign(db)
    upload = upload_bytes(db, campaign_id, BASIC)
    again = uploads.run_ingest(db, upload.id, max_rows=10, chunk_rows=10)
    assert again.model_dump() == upload.model_dump()
    assert contact_count(db) == 2


@pytest.mark.parametrize("status", [CampaignStatus.RUNNING, CampaignStatus.CANCELLED])
def test_uploads_only_while_draft_or_paused(db: Engine, status: CampaignStatus) -> None:
    campaign_id = make_campaign(db)
    with db.begin() as conn:
        conn.execute(
            text("UPDATE campaigns SET status = :s WHERE id = :c"),
            {"s": status.value, "c": campaign_id},
        )
    with pytest.raises(CommandRefused) as refused:
        upload_bytes(db, campaign_id, BASIC)
    assert "draft or paused" in refused.value.message
    assert contact_count(db) == 0
    assert spool_files() == []


def test_counts_by_state_list_every_state(db: Engine) -> None:
    campaign_id = make_campaign(db)
    upload_bytes(db, campaign_id, BASIC + b"nope;X\n")
    campaign = campaign_service.get_campaign(db, campaign_id)
    assert campaign.counts["initial"] == 2
    assert campaign.counts["invalid_record"] == 1
    assert campaign.counts["read"] == 0
    assert campaign.total == 3
    with db.connect() as conn:
        assert contacts_db.counts_by_state(conn, campaign_id) == campaign.counts


def test_export_neutralises_formulas(db: Engine) -> None:
    campaign_id = make_campaign(db)
    upload_bytes(db, campaign_id, b'phone\n=HYPERLINK("http://x")\n@SUM(1)\n+4915123456701\n')
    exported = "".join(campaign_contacts.export_contacts_csv(db, campaign_id))
    lines = exported.splitlines()
    assert lines[0].startswith("line,phone_raw,phone_e164,state,reason,wamid,attempts")
    assert lines[1].startswith('2,"\'=HYPERLINK(""http://x"")"')
    assert lines[2].startswith("3,'@SUM(1)")
    assert lines[3].startswith("4,+4915123456701,+4915123456701,initial")


def test_parse_worker_pool_gives_the_same_rows_in_order(db: Engine) -> None:
    from campaigns.dev import sample_data

    data = "".join(
        f"{phone},{name},{code}\n" for phone, name, code in sample_data.generate_rows(2500, seed=5)
    )
    data = "phone,first_name,code\n" + data
    single = make_campaign(db)
    pooled = make_campaign(db)
    one = upload_bytes(db, single, data.encode(), max_rows=10_000, chunk_rows=300)
    two = upload_bytes(db, pooled, data.encode(), max_rows=10_000, chunk_rows=300, parse_workers=2)
    assert (two.valid, two.invalid, two.reasons) == (one.valid, one.invalid, one.reasons)
    assert two.invalid > 100  # the sample really has bad rows and duplicates
    strip = [{k: v for k, v in r.items()} for r in contacts(db, single)]
    assert contacts(db, pooled) == strip


def _parent_pid() -> int:
    import os

    return os.getppid()


def test_parse_processes_come_from_a_warm_forkserver(db: Engine) -> None:
    import os

    from campaigns.services.uploads import parse_pool

    pool = parse_pool(2)
    assert parse_pool(2) is pool  # kept warm: every upload of this process shares it
    # Not forked from this (threaded) process: a fork could inherit a lock another thread holds.
    assert pool.submit(_parent_pid).result(timeout=60) != os.getpid()
    campaign_id = make_campaign(db)
    upload = upload_bytes(db, campaign_id, BASIC, parse_workers=2)
    assert (upload.valid, upload.invalid) == (2, 0)
    assert parse_pool(2) is pool


def test_a_chunk_stored_twice_is_stored_once(db: Engine) -> None:
    from campaigns.domain.csv_intake import RecordBatch
    from campaigns.domain.uploads import ChunkSpec, stage_chunk

    campaign_id = make_campaign(db)
    upload = upload_bytes(db, campaign_id, f"phone\n{DE_A}\n".encode())
    spec = ChunkSpec(campaign_id, upload.id, "DE", (), ())
    batch = RecordBatch([3, 4, 5], (DE_B, "bad", DE_B), ())
    with db.begin() as conn:
        first = uploads_db.ingest_chunk(
            conn, campaign_id=campaign_id, upload_id=upload.id, chunk=stage_chunk(batch, spec)
        )
    assert (first.valid, first.invalid) == (1, 2)
    with db.begin() as conn:  # a replay (e.g. a lost resume point) changes nothing
        again = uploads_db.ingest_chunk(
            conn, campaign_id=campaign_id, upload_id=upload.id, chunk=stage_chunk(batch, spec)
        )
    assert (again.valid, again.invalid, again.reasons) == (0, 0, {})
    assert [r["line_no"] for r in contacts(db, campaign_id)] == [2, 3, 4, 5]


def test_a_contact_belongs_to_its_uploads_campaign(db: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    first = make_campaign(db)
    other = make_campaign(db)
    upload = upload_bytes(db, first, BASIC)
    with pytest.raises(IntegrityError), db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contacts (campaign_id, upload_id, line_no, phone_raw) "
                "VALUES (:c, :u, 99, 'x')"
            ),
            {"c": other, "u": upload.id},
        )
    with db.begin() as conn:  # deleting a campaign still removes its uploads and contacts
        conn.execute(text("DELETE FROM campaigns WHERE id = :c"), {"c": first})
    assert contact_count(db) == 0
