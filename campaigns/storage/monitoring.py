"""Read-only queries behind the dashboard and ``/metrics``: counts, never contact data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, or_, select, text

from campaigns.domain.states import AUTO_PAUSE_PREFIX, CampaignStatus, ContactState
from campaigns.storage.tables import campaigns_t, contacts_t, uploads_t

# A campaign's contacts stay on /metrics this long after it finished.
FINISHED_VISIBLE = "1 day"


def set_statement_timeout(conn: Connection, timeout_s: float) -> None:
    """Limits every statement of the current transaction (SET LOCAL: ends with it)."""
    ms = max(1, int(timeout_s * 1000))
    conn.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": f"{ms}ms"})


def campaign_exists(conn: Connection, campaign_id: int) -> bool:
    found = conn.execute(select(campaigns_t.c.id).where(campaigns_t.c.id == campaign_id))
    return found.first() is not None


def error_code_counts(
    conn: Connection, campaign_id: int, states: Iterable[ContactState], limit: int
) -> list[tuple[int, int]]:
    """(code, contacts) of the campaign's contacts in ``states``, most frequent first.

    Listing the states lets the query use ix_contacts_campaign_state.
    """
    k = contacts_t.c
    n = func.count().label("n")
    rows = conn.execute(
        select(k.error_code, n)
        .where(
            k.campaign_id == campaign_id,
            k.state.in_([s.value for s in states]),
            k.error_code.is_not(None),
        )
        .group_by(k.error_code)
        .order_by(n.desc(), k.error_code)
        .limit(limit)
    )
    return [(int(code), int(count)) for code, count in rows]


@dataclass(frozen=True, slots=True)
class Gauges:
    contacts: list[tuple[int, str, int]]  # (campaign id, state, contacts)
    campaigns: dict[str, int]  # status -> campaigns
    auto_paused: list[int]  # campaign ids
    upload_valid: int
    upload_invalid: int


def gauges(conn: Connection) -> Gauges:
    c, k, u = campaigns_t.c, contacts_t.c, uploads_t.c
    recent = select(c.id).where(
        or_(
            c.status.not_in([CampaignStatus.COMPLETED.value, CampaignStatus.CANCELLED.value]),
            c.finished_at > func.now() - text(f"interval '{FINISHED_VISIBLE}'"),
        )
    )
    # One GROUP BY over ix_contacts_campaign_state (an index-only scan), limited to
    # campaigns that are live or finished lately so a big history costs nothing.
    by_state = conn.execute(
        select(k.campaign_id, k.state, func.count())
        .where(k.campaign_id.in_(recent.scalar_subquery()))
        .group_by(k.campaign_id, k.state)
    ).all()
    by_status = conn.execute(select(c.status, func.count()).group_by(c.status)).all()
    auto_paused = conn.execute(
        select(c.id).where(
            and_(
                c.status == CampaignStatus.PAUSED.value,
                c.status_reason.startswith(AUTO_PAUSE_PREFIX),
            )
        )
    ).scalars()
    valid, invalid = conn.execute(
        select(
            func.coalesce(func.sum(u.valid_rows), 0),
            func.coalesce(func.sum(u.invalid_rows), 0),
        )
    ).one()
    return Gauges(
        contacts=sorted((int(cid), str(state), int(n)) for cid, state, n in by_state),
        campaigns={str(s): int(n) for s, n in by_status},
        auto_paused=sorted(int(i) for i in auto_paused),
        upload_valid=int(valid),
        upload_invalid=int(invalid),
    )
