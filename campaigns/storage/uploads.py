"""Uploads: their rows, the advisory locks that keep one ingest per upload, and the COPY of
validated chunks into contacts. Functions take a Connection and never commit."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, text, update

from campaigns.domain.uploads import COPY_COLUMNS, ChunkResult, StagedChunk
from campaigns.storage.tables import (
    contacts_t,
    uploads_t,
)


def insert_upload(conn: Connection, fields: Mapping[str, Any]) -> int:
    upload_id = conn.execute(insert(uploads_t).values(**fields).returning(uploads_t.c.id))
    return int(upload_id.scalar_one())


def get_upload(conn: Connection, upload_id: int) -> RowMapping | None:
    return (
        conn.execute(select(uploads_t).where(uploads_t.c.id == upload_id)).mappings().one_or_none()
    )


def list_uploads(conn: Connection, campaign_id: int) -> list[RowMapping]:
    query = select(uploads_t).where(uploads_t.c.campaign_id == campaign_id).order_by(uploads_t.c.id)
    return list(conn.execute(query).mappings())


def update_upload(conn: Connection, upload_id: int, **values: Any) -> None:
    conn.execute(update(uploads_t).where(uploads_t.c.id == upload_id).values(**values))


def try_lock_upload(conn: Connection, upload_id: int) -> bool:
    """Session-level advisory lock: one ingest per upload even if its task is delivered twice."""
    locked = conn.execute(
        text("SELECT pg_try_advisory_lock(1, CAST(:id AS int))"), {"id": upload_id}
    )
    return bool(locked.scalar_one())


def unlock_upload(conn: Connection, upload_id: int) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(1, CAST(:id AS int))"), {"id": upload_id})


def delete_upload_contacts(conn: Connection, upload_id: int) -> int:
    result = conn.execute(contacts_t.delete().where(contacts_t.c.upload_id == upload_id))
    return int(result.rowcount)


# What the database knows about a staged chunk, in one round trip: lines a previous run of the
# upload already stored (normally none: the resume point commits with its chunk), live contacts
# of the campaign with the chunk's numbers (an earlier chunk or upload: first wins; the partial
# unique index answers), and opted-out numbers.
_CHUNK_FACTS = """
SELECT 'stored' AS kind, NULL AS phone, line_no, NULL AS upload_id FROM contacts
WHERE upload_id = %(upload_id)s AND line_no BETWEEN %(first_line)s AND %(last_line)s
UNION ALL
SELECT 'prior', phone_e164, line_no, upload_id FROM contacts
WHERE campaign_id = %(campaign_id)s AND phone_e164 = ANY(string_to_array(%(phones)s, ','))
  AND state <> 'invalid_record'
UNION ALL
SELECT 'opted_out', phone_e164, NULL, NULL FROM opt_outs
WHERE phone_e164 = ANY(string_to_array(%(phones)s, ','))
"""


_COPY_CONTACTS = f"COPY contacts ({', '.join(COPY_COLUMNS)}) FROM STDIN"


def ingest_chunk(
    conn: Connection, *, campaign_id: int, upload_id: int, chunk: StagedChunk
) -> ChunkResult:
    """Settles a staged chunk against the campaign's contacts and COPYs it into contacts."""
    # The resume point commits with the rows, so a chunk lost to a crash is simply read again:
    # no need to wait for the WAL flush of every chunk.
    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    # Two uploads into one campaign take turns per chunk, so "first wins" holds across them.
    conn.execute(text("SELECT pg_advisory_xact_lock(2, CAST(:id AS int))"), {"id": campaign_id})
    raw = conn.connection.driver_connection
    assert raw is not None
    stored: set[int] = set()
    prior: dict[str, tuple[int, int]] = {}
    opted_out: set[str] = set()
    with raw.cursor() as cursor:
        cursor.execute(
            _CHUNK_FACTS,
            {
                "upload_id": upload_id,
                "first_line": chunk.lines[0],
                "last_line": chunk.last_line,
                "campaign_id": campaign_id,
                # E.164 has no commas; one text parameter is ~10x cheaper to send than a list.
                "phones": ",".join(chunk.firsts),
            },
        )
        for kind, phone, line, upload in cursor:
            if kind == "stored":
                stored.add(line)
            elif kind == "prior":
                prior[phone] = (line, upload)
            else:
                opted_out.add(phone)
        result = chunk.settle(upload_id, prior=prior, opted_out=opted_out, stored_lines=stored)
        if chunk.lines:
            with cursor.copy(_COPY_CONTACTS) as copy:
                copy.write(chunk.copy_text())
    return result


def add_upload_progress(
    conn: Connection, upload_id: int, *, rows_read: int, last_line: int, chunk: ChunkResult
) -> None:
    """Counters and the resume point move in the same transaction as the chunk's rows."""
    reasons_json = json.dumps(chunk.reasons)
    conn.execute(
        text(
            """
            UPDATE uploads SET
                rows_read = rows_read + :rows_read,
                valid_rows = valid_rows + :valid,
                invalid_rows = invalid_rows + :invalid,
                last_line = :last_line,
                reasons = (
                    SELECT coalesce(jsonb_object_agg(key, total), '{}'::jsonb) FROM (
                        SELECT key, sum(value::bigint) AS total FROM (
                            SELECT key, value FROM jsonb_each_text(uploads.reasons)
                            UNION ALL
                            SELECT key, value FROM jsonb_each_text(CAST(:reasons AS jsonb))
                        ) both_ GROUP BY key
                    ) merged
                )
            WHERE id = :upload_id
            """
        ),
        {
            "rows_read": rows_read,
            "valid": chunk.valid,
            "invalid": chunk.invalid,
            "last_line": last_line,
            "reasons": reasons_json,
            "upload_id": upload_id,
        },
    )
