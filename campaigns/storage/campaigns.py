"""SQL of campaign rows and their status changes. Functions take a Connection and never
commit; services own that."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, select, update

from campaigns.domain.states import (
    CampaignStatus,
    IllegalTransition,
    campaign_transition,
)
from campaigns.storage.tables import (
    campaign_events_t,
    campaigns_t,
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


def list_campaigns(
    conn: Connection, *, limit: int, before_id: int | None = None
) -> list[RowMapping]:
    """Newest first, at most ``limit``; keyset paging: ``before_id`` is the last id seen."""
    query = select(campaigns_t).order_by(campaigns_t.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(campaigns_t.c.id < before_id)
    return list(conn.execute(query).mappings())


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


# --------------------------------------------------------------------------- contacts


# --------------------------------------------------------------------------- API tokens
