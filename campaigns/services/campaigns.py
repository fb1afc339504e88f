"""Campaign use cases: create, read and list (with counts, held sends and ETA). Each owns its
transactions; none calls the network inside one."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection, Engine, RowMapping

from campaigns.domain.refusals import NotFound
from campaigns.domain.send_window import format_window
from campaigns.domain.states import PENDING_CONTACT_STATES, CampaignStatus
from campaigns.storage import campaign_contacts as contacts_db
from campaigns.storage import campaigns as campaigns_db
from schemas.api import (
    CampaignCreate,
    CampaignOut,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- campaigns


def create_campaign(engine: Engine, body: CampaignCreate) -> CampaignOut:
    window = body.window()
    with engine.begin() as conn:
        campaign_id = campaigns_db.insert_campaign(
            conn,
            {
                "name": body.name,
                "template_name": body.template,
                "template_language": body.language,
                "default_region": body.region,
                "body_variables": body.body_variables,
                "named_variables": body.named_variables,
                "phone_number_id": body.phone_number_id,
                "rate_per_s": body.rate_per_s,
                "max_attempts": body.max_attempts,
                "send_window_start": window.start if window else None,
                "send_window_end": window.end if window else None,
                "send_window_tz": window.fallback_tz if window else None,
                "require_opt_in": body.require_opt_in,
                "check_contacts": body.check_contacts,
            },
        )
        return _campaign_out(conn, campaign_id)


RateReader = Callable[[int], float]
"""Messages accepted per second lately for a campaign (Redis telemetry), for rate and ETA."""


def get_campaign(
    engine: Engine, campaign_id: int, *, rate_now: RateReader | None = None
) -> CampaignOut:
    with engine.connect() as conn:
        return _campaign_out(conn, campaign_id, rate_now=rate_now)


DEFAULT_PAGE = 100
MAX_PAGE = 500


def list_campaigns(
    engine: Engine,
    *,
    rate_now: RateReader | None = None,
    limit: int = DEFAULT_PAGE,
    after_id: int | None = None,
) -> list[CampaignOut]:
    """A page of campaigns, newest first: at most ``limit`` (capped at :data:`MAX_PAGE`),
    older than ``after_id`` (the last id of the page before). Two queries per page: the
    campaigns, and their counts per state (and held sends) in one GROUP BY."""
    limit = max(1, min(limit, MAX_PAGE))
    with engine.connect() as conn:
        rows = campaigns_db.list_campaigns(conn, limit=limit, before_id=after_id)
        ids = [int(r["id"]) for r in rows]
        counts, held = contacts_db.counts_and_held_for(conn, ids)
        return [
            _campaign_out(conn, i, r, rate_now=rate_now, counts=counts[i], held=held[i])
            for i, r in zip(ids, rows, strict=True)
        ]


def eta_seconds(
    status: CampaignStatus, pending: int, rate_now: float, configured_rate: float
) -> float | None:
    """Time left for the contacts still to send, at the measured rate (or the configured one
    before any was measured); None when the campaign is not sending."""
    if status is not CampaignStatus.RUNNING or pending == 0:
        return None
    rate = rate_now if rate_now > 0 else configured_rate
    return round(pending / rate, 1)


def _campaign_out(
    conn: Connection,
    campaign_id: int,
    row: RowMapping | None = None,
    *,
    rate_now: RateReader | None = None,
    counts: dict[str, int] | None = None,
    held: int | None = None,
) -> CampaignOut:
    row = row or campaigns_db.get_campaign(conn, campaign_id)
    if row is None:
        raise NotFound("campaign", campaign_id)
    if counts is None or held is None:
        all_counts, all_held = contacts_db.counts_and_held_for(conn, [campaign_id])
        counts, held = all_counts[campaign_id], all_held[campaign_id]
    status = CampaignStatus(row["status"])
    rate = rate_now(campaign_id) if rate_now is not None else 0.0
    pending = sum(counts[s.value] for s in PENDING_CONTACT_STATES)
    return CampaignOut(
        id=row["id"],
        name=row["name"],
        status=status,
        status_reason=row["status_reason"],
        template=row["template_name"],
        language=row["template_language"],
        region=row["default_region"],
        body_variables=list(row["body_variables"]),
        named_variables=bool(row["named_variables"]),
        phone_number_id=row["phone_number_id"],
        rate_per_s=float(row["rate_per_s"]),
        max_attempts=row["max_attempts"],
        send_window=(
            format_window(row["send_window_start"], row["send_window_end"])
            if row["send_window_start"] is not None
            else None
        ),
        send_window_tz=row["send_window_tz"],
        require_opt_in=bool(row["require_opt_in"]),
        check_contacts=bool(row["check_contacts"]),
        contacts_checked_at=row["contacts_checked_at"],
        scheduled_at=row["scheduled_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        counts=counts,
        total=sum(counts.values()),
        held=held,
        rate_now_per_s=round(rate, 1),
        eta_seconds=eta_seconds(status, pending, rate, float(row["rate_per_s"])),
    )


# --------------------------------------------------------------------------- uploads


# --------------------------------------------------------------------------- contacts


# --------------------------------------------------------------------------- API tokens
