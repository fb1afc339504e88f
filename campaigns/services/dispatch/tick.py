"""The beat tick's campaign-level steps: scheduled starts and completion of those with
nothing left to send; and which running campaigns have work due now (the dispatchers')."""

from __future__ import annotations

from sqlalchemy import Engine

from campaigns.domain.states import CampaignStatus
from campaigns.services.dispatch.batch import mark_completed
from campaigns.storage import campaigns as campaigns_db
from campaigns.storage import dispatch as dispatch_db
from campaigns.storage import sql


def start_due_scheduled(engine: Engine) -> list[int]:
    started: list[int] = []
    with engine.begin() as conn:
        for campaign_id in dispatch_db.due_scheduled_campaigns(conn):
            campaigns_db.set_campaign_status(
                conn,
                campaign_id,
                CampaignStatus.SCHEDULED,
                CampaignStatus.RUNNING,
                source="schedule",
                extra={"started_at": sql.now(conn)},
            )
            started.append(campaign_id)
    return started


def complete_finished(engine: Engine) -> list[int]:
    """Running campaigns with nothing left in Initial, In progress or Retry scheduled."""
    done: list[int] = []
    with engine.begin() as conn:
        for campaign_id in dispatch_db.campaign_ids_by_status(conn, [CampaignStatus.RUNNING.value]):
            if dispatch_db.has_pending(conn, campaign_id):
                continue
            row = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
            if row is None or row["status"] != CampaignStatus.RUNNING.value:
                continue
            if dispatch_db.has_pending(conn, campaign_id):
                continue
            mark_completed(conn, campaign_id)
            done.append(campaign_id)
    return done


def running_due(engine: Engine, default_sender: str) -> list[tuple[int, str, float]]:
    """(campaign id, sender number id, configured rate) of every running campaign with work
    due now, in one statement."""
    with engine.connect() as conn:
        rows = dispatch_db.running_with_due_work(conn)
    return [(cid, sender or default_sender, rate) for cid, sender, rate in rows]
