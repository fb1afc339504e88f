"""Admin writes on campaign contacts: cancel what is unsent, remove named contacts.

Set-based statements whose ``WHERE state IN (...)`` guard comes from the transition table,
with their events appended in the same statement. Functions never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, text

from campaigns.domain.states import (
    ContactState,
    contact_sources,
)
from campaigns.storage.sql import in_list

C = ContactState


def cancel_pending(conn: Connection, campaign_id: int, *, detail: str) -> int:
    """Every contact of the campaign not yet claimed -> Canceled by admin."""
    return _move_by_admin(conn, campaign_id, C.CANCELED_BY_ADMIN, detail=detail)


def find_contacts(
    conn: Connection, campaign_id: int, *, ids: Sequence[int], phones: Sequence[str]
) -> list[RowMapping]:
    """Contacts of the campaign named by id or E.164 phone (invalid records excluded by phone)."""
    return list(
        conn.execute(
            text(
                "SELECT id, phone_e164, state FROM contacts WHERE campaign_id = :cid AND "
                "(id = ANY(CAST(:ids AS bigint[])) OR (phone_e164 = ANY(CAST(:phones AS text[])) "
                "AND state <> 'invalid_record')) FOR UPDATE"
            ),
            {"cid": campaign_id, "ids": list(ids), "phones": list(phones)},
        ).mappings()
    )


def remove_contacts(conn: Connection, campaign_id: int, ids: Sequence[int], *, detail: str) -> int:
    return _move_by_admin(conn, campaign_id, C.REMOVED, detail=detail, ids=ids)


_MOVE_WITH_EVENTS = """
WITH prior AS (
    SELECT id, state FROM contacts
    WHERE campaign_id = :cid AND state IN ({sources}) {extra}
    ORDER BY id
    FOR UPDATE
), moved AS (
    UPDATE contacts c SET state = :target, reason = :detail, finished_at = now(),
        updated_at = now()
    FROM prior WHERE c.id = prior.id
    RETURNING c.id, prior.state AS from_state
), events AS (
    INSERT INTO contact_events (contact_id, campaign_id, from_state, to_state, source, detail)
    SELECT id, :cid, from_state, :target, 'admin', :detail FROM moved
)
SELECT count(*) FROM moved
"""


def _move_by_admin(
    conn: Connection,
    campaign_id: int,
    target: ContactState,
    *,
    detail: str,
    ids: Sequence[int] | None = None,
) -> int:
    sql = _MOVE_WITH_EVENTS.format(
        sources=in_list(contact_sources(target)),
        extra="" if ids is None else "AND id = ANY(CAST(:ids AS bigint[]))",
    )
    params: dict[str, Any] = {"cid": campaign_id, "target": target.value, "detail": detail}
    if ids is not None:
        params["ids"] = list(ids)
    return int(conn.execute(text(sql), params).scalar_one())
