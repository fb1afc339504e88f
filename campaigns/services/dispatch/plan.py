"""A campaign's send plan, and the waits a running campaign shows in its ``status_reason``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from campaigns.domain.dispatch import CampaignPlan, window_reason
from campaigns.domain.profiles import NO_SCHEMA
from campaigns.domain.send_window import SendWindow
from campaigns.domain.states import CampaignStatus
from campaigns.storage import campaigns as campaigns_db
from campaigns.storage import dispatch as dispatch_db
from campaigns.storage import profiles as profiles_db


def load_plan(engine: Engine, campaign_id: int, default_sender: str) -> CampaignPlan | None:
    with engine.connect() as conn:
        row = campaigns_db.get_campaign(conn, campaign_id)
        schema = profiles_db.newest_schema(conn) if row and row["body_variables"] else NO_SCHEMA
    if row is None:
        return None
    variables = tuple(row["body_variables"] or ())
    window = None
    if row["send_window_start"] is not None:
        window = SendWindow(row["send_window_start"], row["send_window_end"], row["send_window_tz"])
    return CampaignPlan(
        id=campaign_id,
        status=CampaignStatus(row["status"]),
        template=row["template_name"] or "",
        language=row["template_language"],
        body_variables=variables,
        sender_id=row["phone_number_id"] or default_sender,
        rate_per_s=float(row["rate_per_s"]),
        max_attempts=int(row["max_attempts"]),
        window=window,
        named_variables=bool(row["named_variables"]),
        require_opt_in=bool(row["require_opt_in"]),
        awaiting_check=bool(row["check_contacts"]) and row["contacts_checked_at"] is None,
        profile_fields=tuple(f for name in variables if (f := schema.get(name)) is not None),
    )


def note_tier_wait(engine: Engine, campaign_id: int, reason: str) -> None:
    """Shows a running campaign's wait for the messaging tier in its ``status_reason``."""
    with engine.begin() as conn:
        row = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
        running = row is not None and row["status"] == CampaignStatus.RUNNING.value
        if running and row is not None and row["status_reason"] != reason:
            campaigns_db.set_status_reason(conn, campaign_id, reason)


def note_window_wait(engine: Engine, campaign_id: int, opens_at: datetime) -> None:
    """Shows a running campaign's wait for its recipients' send window in its
    ``status_reason``, when nothing of it is due now (all that is left waits)."""
    reason = window_reason(opens_at)
    with engine.begin() as conn:
        row = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
        if row is None or row["status"] != CampaignStatus.RUNNING.value:
            return
        if row["status_reason"] != reason and dispatch_db.next_due_in_s(conn, campaign_id) != 0.0:
            campaigns_db.set_status_reason(conn, campaign_id, reason)
