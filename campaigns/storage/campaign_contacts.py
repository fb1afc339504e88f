"""A campaign's contacts as operators read them: counts per state, keyset pages, exports."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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


def held_count(conn: Connection, campaign_id: int) -> int:
    """Contacts whose send the platform accepted but held for a quality assessment."""
    query = (
        select(func.count())
        .select_from(contacts_t)
        .where(contacts_t.c.campaign_id == campaign_id)
        .where(contacts_t.c.message_status == HELD_FOR_QUALITY_ASSESSMENT)
    )
    return int(conn.execute(query).scalar_one())


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
