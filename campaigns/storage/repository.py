"""All SQL of the project. Functions take a Connection and never commit; services own that."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, select, text, update

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


# An ingest chunk row: line, phone_raw, phone_e164, variables (json), reason_code, reason
StageRow = tuple[int, str, str | None, str, str | None, str | None]


@dataclass(frozen=True)
class ChunkResult:
    valid: int
    invalid: int
    reasons: dict[str, int]


_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
    line_no integer NOT NULL,
    phone_raw text NOT NULL,
    phone_e164 text,
    variables jsonb NOT NULL,
    reason_code text,
    reason text
) ON COMMIT DELETE ROWS
"""

# Duplicates keep the first: earlier rows of this chunk (window) or any live contact already in
# the campaign (earlier chunks and uploads, through the partial unique index). Opted-out phones
# are refused here too. Replayed lines of a resumed upload hit the (upload_id, line_no) key.
_STAGE_TO_CONTACTS = """
WITH ranked AS (
    SELECT s.*,
           min(s.line_no) FILTER (WHERE s.reason_code IS NULL)
               OVER (PARTITION BY s.phone_e164) AS first_line
    FROM ingest_stage s
), decided AS (
    SELECT r.line_no, r.phone_raw, r.phone_e164, r.variables,
           CASE
               WHEN r.reason_code IS NOT NULL THEN r.reason_code
               WHEN prior.line_no IS NOT NULL OR r.line_no <> r.first_line THEN 'duplicate'
               WHEN o.phone_e164 IS NOT NULL THEN 'opted_out'
           END AS reason_code,
           CASE
               WHEN r.reason_code IS NOT NULL THEN r.reason
               WHEN prior.line_no IS NOT NULL THEN
                   'duplicate of line ' || prior.line_no
                   || CASE WHEN prior.upload_id <> :upload_id
                           THEN ' of upload ' || prior.upload_id ELSE '' END
               WHEN r.line_no <> r.first_line THEN 'duplicate of line ' || r.first_line
               WHEN o.phone_e164 IS NOT NULL THEN 'opted out'
           END AS reason
    FROM ranked r
    LEFT JOIN LATERAL (
        SELECT c.line_no, c.upload_id FROM contacts c
        WHERE c.campaign_id = :campaign_id AND c.phone_e164 = r.phone_e164
          AND c.state <> 'invalid_record'
        LIMIT 1
    ) prior ON r.reason_code IS NULL
    LEFT JOIN opt_outs o ON r.reason_code IS NULL AND o.phone_e164 = r.phone_e164
), inserted AS (
    INSERT INTO contacts (campaign_id, upload_id, line_no, phone_raw, phone_e164, variables,
                          state, reason_code, reason)
    SELECT :campaign_id, :upload_id, d.line_no, d.phone_raw, d.phone_e164, d.variables,
           CASE WHEN d.reason_code IS NULL THEN 'initial' ELSE 'invalid_record' END,
           d.reason_code, d.reason
    FROM decided d
    ORDER BY d.line_no
    ON CONFLICT (upload_id, line_no) DO NOTHING
    RETURNING reason_code
)
SELECT reason_code, count(*) AS n FROM inserted GROUP BY reason_code
"""


def ingest_chunk(
    conn: Connection, *, campaign_id: int, upload_id: int, rows: Sequence[StageRow]
) -> ChunkResult:
    """COPY a chunk into a temp table, then decide duplicates and insert in one statement."""
    # The resume point commits with the rows, so a chunk lost to a crash is simply read again:
    # no need to wait for the WAL flush of every chunk.
    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    # Two uploads into one campaign take turns per chunk, so "first wins" holds across them.
    conn.execute(text("SELECT pg_advisory_xact_lock(2, CAST(:id AS int))"), {"id": campaign_id})
    conn.exec_driver_sql(_STAGE_DDL)
    raw = conn.connection.driver_connection
    assert raw is not None
    with (
        raw.cursor() as cursor,
        cursor.copy(
            "COPY ingest_stage (line_no, phone_raw, phone_e164, variables, reason_code, reason) "
            "FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)
    counts = conn.execute(
        text(_STAGE_TO_CONTACTS), {"campaign_id": campaign_id, "upload_id": upload_id}
    ).all()
    reasons = {str(code): int(n) for code, n in counts if code is not None}
    valid = sum(int(n) for code, n in counts if code is None)
    return ChunkResult(valid=valid, invalid=sum(reasons.values()), reasons=reasons)


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
