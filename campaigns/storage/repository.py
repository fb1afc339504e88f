"""All SQL of the project. Functions take a Connection and never commit; services own that."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, select, text, update

from campaigns.ingest import COPY_COLUMNS, ChunkResult, StagedChunk
from campaigns.states import CampaignStatus, ContactState, IllegalTransition, campaign_transition
from campaigns.storage.tables import (
    api_tokens_t,
    campaign_events_t,
    campaigns_t,
    contacts_t,
    uploads_t,
)

# --------------------------------------------------------------------------- campaigns


def insert_campaign(conn: Connection, fields: Mapping[str, Any]) -> int:
    campaign_id = conn.execute(insert(campaigns_t).values(**fields).returning(campaigns_t.c.id))
    return int(campaign_id.scalar_one())


def get_campaign(
    conn: Connection, campaign_id: int, *, for_update: bool = False
) -> RowMapping | None:
    query = select(campaigns_t).where(campaigns_t.c.id == campaign_id)
    if for_update:
        query = query.with_for_update()
    return conn.execute(query).mappings().one_or_none()


def list_campaigns(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(campaigns_t).order_by(campaigns_t.c.id.desc())).mappings())


def set_campaign_status(
    conn: Connection,
    campaign_id: int,
    current: CampaignStatus,
    target: CampaignStatus,
    *,
    source: str,
    detail: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Moves a campaign along the lifecycle table; the WHERE guard refuses a raced change."""
    campaign_transition(current, target)
    result = conn.execute(
        update(campaigns_t)
        .where(campaigns_t.c.id == campaign_id, campaigns_t.c.status == current.value)
        .values(status=target.value, updated_at=func.now(), **(extra or {}))
    )
    if result.rowcount != 1:
        raise IllegalTransition("campaign", current, target)
    conn.execute(
        insert(campaign_events_t).values(
            campaign_id=campaign_id,
            from_status=current.value,
            to_status=target.value,
            source=source,
            detail=detail,
        )
    )


def set_status_reason(conn: Connection, campaign_id: int, reason: str | None) -> None:
    """The campaign's ``status_reason`` alone (the status stays, no lifecycle event)."""
    conn.execute(
        update(campaigns_t)
        .where(campaigns_t.c.id == campaign_id)
        .values(status_reason=reason, updated_at=func.now())
    )


# --------------------------------------------------------------------------- uploads


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


# --------------------------------------------------------------------------- contacts


def counts_by_state(conn: Connection, campaign_id: int) -> dict[str, int]:
    query = (
        select(contacts_t.c.state, func.count())
        .where(contacts_t.c.campaign_id == campaign_id)
        .group_by(contacts_t.c.state)
    )
    found = {str(state): int(n) for state, n in conn.execute(query)}
    return {state.value: found.get(state.value, 0) for state in ContactState}


EXPORT_COLUMNS = (
    "id",
    "line_no",
    "phone_raw",
    "phone_e164",
    "state",
    "reason",
    "wamid",
    "attempts",
    "error_code",
    "error_detail",
    "sent_at",
    "delivered_at",
    "read_at",
)


def page_contacts(
    conn: Connection,
    campaign_id: int,
    *,
    states: Iterable[ContactState] = (),
    after_id: int = 0,
    limit: int = 100,
) -> list[RowMapping]:
    """Keyset paging by id: stable and cheap at any depth of a million-row campaign."""
    columns = [contacts_t.c[name] for name in EXPORT_COLUMNS] + [contacts_t.c.variables]
    query = (
        select(*columns)
        .where(contacts_t.c.campaign_id == campaign_id, contacts_t.c.id > after_id)
        .order_by(contacts_t.c.id)
        .limit(limit)
    )
    wanted = [s.value for s in states]
    if wanted:
        query = query.where(contacts_t.c.state.in_(wanted))
    return list(conn.execute(query).mappings())


def iter_contacts(
    conn: Connection, campaign_id: int, *, states: Iterable[ContactState] = (), batch: int = 5000
) -> Iterator[RowMapping]:
    """Every contact of a campaign in id order, a page at a time (bounded memory for exports)."""
    after_id = 0
    state_list = list(states)
    while True:
        page = page_contacts(conn, campaign_id, states=state_list, after_id=after_id, limit=batch)
        yield from page
        if len(page) < batch:
            return
        after_id = int(page[-1]["id"])


# --------------------------------------------------------------------------- API tokens


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def insert_api_token(conn: Connection, name: str, token: str) -> int:
    query = insert(api_tokens_t).values(name=name, token_sha256=token_digest(token))
    return int(conn.execute(query.returning(api_tokens_t.c.id)).scalar_one())


def api_token_exists(conn: Connection, token: str) -> bool:
    query = select(api_tokens_t.c.id).where(
        api_tokens_t.c.token_sha256 == token_digest(token), api_tokens_t.c.revoked_at.is_(None)
    )
    return conn.execute(query).first() is not None


def now(conn: Connection) -> datetime:
    moment: datetime = conn.execute(select(func.now())).scalar_one()
    return moment
