"""Uploads: their rows, the advisory locks that keep one ingest per upload, and the COPY of
validated chunks into contacts. Functions take a Connection and never commit."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Connection, RowMapping, insert, select, text, update

from campaigns.domain.profile_docs import ProfileColumns
from campaigns.domain.registry import Change, Learned, PersonStatus, Standing
from campaigns.domain.uploads import COPY_COLUMNS, ChunkResult, StagedChunk
from campaigns.storage import profiles as profiles_db
from campaigns.storage import registry as registry_db
from campaigns.storage import sql
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
# unique index answers), and the registry's people of the chunk that may be refused (or were
# removed: an upload brings them back). The same statement makes the people it does not know
# yet: their ids are the numbers' digits, already in the COPY rows, so nothing comes back
# per row and a fresh number costs one heap tuple and one index entry. The insert is plain
# (ON CONFLICT's speculative insertion costs twice as much per row): only a person another
# transaction made after this statement's snapshot conflicts, and then the chunk runs again
# with ``racing`` (ON CONFLICT DO NOTHING), see :class:`PeopleRaced`.
_CHUNK_FACTS = """
WITH phones AS (
    SELECT p AS phone, CAST(substr(p, 2) AS bigint) AS id
    FROM unnest(string_to_array(%(phones)s, ',')) AS p
), known AS (
    SELECT people.* FROM people JOIN phones USING (id)
), added AS (
    INSERT INTO people (id, phone_e164)
    SELECT id, phone FROM phones WHERE id NOT IN (SELECT id FROM known)
    ORDER BY id
    {conflict}
)
SELECT 'stored' AS kind, NULL AS phone, line_no, NULL AS upload_id,
       NULL AS status, NULL::boolean AS opted_out, NULL::boolean AS opted_in,
       NULL::boolean AS removed
FROM contacts
WHERE upload_id = %(upload_id)s AND line_no BETWEEN %(first_line)s AND %(last_line)s
UNION ALL
SELECT 'prior', phone_e164, line_no, upload_id, NULL, NULL, NULL, NULL FROM contacts
WHERE campaign_id = %(campaign_id)s AND phone_e164 = ANY(string_to_array(%(phones)s, ','))
  AND state <> 'invalid_record'
UNION ALL
SELECT 'person', phone_e164, NULL, NULL, status, opted_out, opted_in, removed_at IS NOT NULL
FROM known
WHERE status IS NOT NULL OR opted_out OR removed_at IS NOT NULL
   OR (%(require_opt_in)s AND opted_in)
"""


_FACTS = _CHUNK_FACTS.format(conflict="")
_FACTS_RACING = _CHUNK_FACTS.format(conflict="ON CONFLICT (id) DO NOTHING")


class PeopleRaced(Exception):
    """Another transaction made one of the chunk's people meanwhile: nothing of the chunk was
    stored (its transaction is lost); store it again with ``racing=True``."""


_COPY_CONTACTS = f"COPY contacts ({', '.join(COPY_COLUMNS)}) FROM STDIN"


@dataclass
class _Facts:
    stored: set[int] = field(default_factory=set)
    prior: dict[str, tuple[int, int]] = field(default_factory=dict)
    standings: dict[str, Standing] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)


def ingest_chunk(
    conn: Connection,
    *,
    campaign_id: int,
    upload_id: int,
    chunk: StagedChunk,
    require_opt_in: bool = False,
    racing: bool = False,
    profile: ProfileColumns | None = None,
) -> ChunkResult:
    """Settles a staged chunk against the campaign's contacts, the registry and the stored
    profiles, COPYs it into contacts (each row linked to its person) and merges its profile
    cells into the people's profiles (one statement)."""
    # The resume point commits with the rows, so a chunk lost to a crash is simply read again:
    # no need to wait for the WAL flush of every chunk.
    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    # Two uploads into one campaign take turns per chunk, so "first wins" holds across them.
    conn.execute(text("SELECT pg_advisory_xact_lock(2, CAST(:id AS int))"), {"id": campaign_id})
    raw = conn.connection.driver_connection
    assert raw is not None
    facts = _chunk_facts(raw, campaign_id, upload_id, chunk, require_opt_in, racing)
    filled = None
    if chunk.needs and profile is not None:  # template variables the profile must fill
        fields = [f for f, _ in profile.fallback]
        filled = profiles_db.filled_for(conn, chunk.needs, fields)
    result = chunk.settle(
        upload_id,
        prior=facts.prior,
        standings=facts.standings,
        require_opt_in=require_opt_in,
        stored_lines=facts.stored,
        filled=filled,
    )
    if chunk.lines:
        with raw.cursor() as cursor, cursor.copy(_COPY_CONTACTS) as copy:
            copy.write(chunk.copy_text())
    _learn_from_chunk(conn, upload_id, chunk, facts.removed)
    if chunk.profiles is not None and profile is not None:
        profiles_db.patch_many(conn, profile.schema_uuid, chunk.profiles)
    return result


def _chunk_facts(
    raw: Any,
    campaign_id: int,
    upload_id: int,
    chunk: StagedChunk,
    require_opt_in: bool,
    racing: bool,
) -> _Facts:
    """What the database knows of the chunk (and the people it makes), one round trip."""
    facts = _Facts()
    with raw.cursor() as cursor:
        _ask(
            cursor,
            _FACTS_RACING if racing else _FACTS,
            {
                "upload_id": upload_id,
                "first_line": chunk.lines[0],
                "last_line": chunk.last_line,
                "campaign_id": campaign_id,
                # E.164 has no commas; one text parameter is ~10x cheaper to send than a list.
                "phones": ",".join(chunk.firsts),
                "require_opt_in": require_opt_in,
            },
        )
        for kind, phone, line, upload, status, opted_out, opted_in, removed in cursor:
            if kind == "stored":
                facts.stored.add(line)
            elif kind == "prior":
                facts.prior[phone] = (line, upload)
            else:
                facts.standings[phone] = Standing(
                    PersonStatus(status) if status else None, opted_out, opted_in
                )
                if removed:
                    facts.removed.append(phone)
    return facts


def _ask(cursor: Any, query: str, params: Mapping[str, Any]) -> None:
    try:
        cursor.execute(query, params)
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "pk_people":
            raise PeopleRaced(str(exc)) from exc
        raise


def _learn_from_chunk(
    conn: Connection, upload_id: int, chunk: StagedChunk, removed: list[str]
) -> None:
    """The registry learns the upload's opted_in cells, and removed people it names come back
    (both rare: a second statement only then)."""
    if not removed and not chunk.opt_ins:
        return
    at = sql.now(conn)
    source = f"upload {upload_id}"
    facts = [(phone, Learned(Change.SEEN, at)) for phone in removed]
    facts += [
        (phone, Learned(Change.UPLOAD_OPT_IN, at, source=source, value=value))
        for phone, value in chunk.opt_ins.items()
    ]
    registry_db.apply(conn, facts)


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
