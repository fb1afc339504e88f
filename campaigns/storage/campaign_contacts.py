"""A campaign's contacts as operators read them: counts per state, keyset pages, exports."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, RowMapping, func, select

from campaigns.domain.outcomes import HELD_FOR_QUALITY_ASSESSMENT
from campaigns.domain.states import (
    ContactState,
)
from campaigns.storage.tables import (
    contacts_t,
)


def counts_by_state(conn: Connection, campaign_id: int) -> dict[str, int]:
    query = (
        select(contacts_t.c.state, func.count())
        .where(contacts_t.c.campaign_id == campaign_id)
        .group_by(contacts_t.c.state)
    )
    found = {str(state): int(n) for state, n in conn.execute(query)}
    return {state.value: found.get(state.value, 0) for state in ContactState}


def counts_and_held_for(
    conn: Connection, campaign_ids: list[int]
) -> tuple[dict[int, dict[str, int]], dict[int, int]]:
    """:func:`counts_by_state` of many campaigns, and per campaign its sends the platform
    holds for a quality assessment, in one GROUP BY (a listing page)."""
    counts = {cid: dict.fromkeys((s.value for s in ContactState), 0) for cid in campaign_ids}
    held = dict.fromkeys(campaign_ids, 0)
    if not campaign_ids:
        return counts, held
    is_held = contacts_t.c.message_status == HELD_FOR_QUALITY_ASSESSMENT
    query = (
        select(
            contacts_t.c.campaign_id,
            contacts_t.c.state,
            func.count(),
            func.count().filter(is_held),
        )
        .where(contacts_t.c.campaign_id.in_(campaign_ids))
        .group_by(contacts_t.c.campaign_id, contacts_t.c.state)
    )
    for campaign_id, state, n, n_held in conn.execute(query):
        counts[int(campaign_id)][str(state)] = int(n)
        held[int(campaign_id)] += int(n_held)
    return counts, held


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
    person_id: int | None = None,
    phone_raw: str | None = None,
    upload_id: int | None = None,
) -> list[RowMapping]:
    """Keyset paging by id: stable and cheap at any depth of a million-row campaign.

    ``person_id`` (indexed) narrows to one number's contacts; ``phone_raw`` to the rows
    whose phone cell was exactly that (rejected numbers have no person); ``upload_id`` to
    one upload's rows."""
    columns = [contacts_t.c[name] for name in EXPORT_COLUMNS] + [
        contacts_t.c.variables,
        contacts_t.c.reason_code,
    ]
    query = (
        select(*columns)
        .where(contacts_t.c.campaign_id == campaign_id, contacts_t.c.id > after_id)
        .order_by(contacts_t.c.id)
        .limit(limit)
    )
    wanted = [s.value for s in states]
    if wanted:
        query = query.where(contacts_t.c.state.in_(wanted))
    if person_id is not None:
        query = query.where(contacts_t.c.person_id == person_id)
    if phone_raw is not None:
        query = query.where(contacts_t.c.phone_raw == phone_raw)
    if upload_id is not None:
        query = query.where(contacts_t.c.upload_id == upload_id)
    return list(conn.execute(query).mappings())
