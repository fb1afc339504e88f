"""The beat tick's campaign-level steps: scheduled starts, which running campaigns have work
due now, and completion of those with nothing left to send."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from campaigns.domain.states import CampaignStatus
from campaigns.services.dispatch.batch import mark_completed
from campaigns.services.dispatch.plan import load_plan
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


def campaigns_with_due_work(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        running = dispatch_db.campaign_ids_by_status(conn, [CampaignStatus.RUNNING.value])
        return [cid for cid in running if dispatch_db.next_due_in_s(conn, cid) == 0.0]


def chains_due(
    engine: Engine,
    *,
    messaging_limit: int,
    default_sender: str,
    tier_blocked: Callable[[str], bool],
) -> list[tuple[int, str | None]]:
    """The running campaigns a chain should run for now: work due, and with a messaging
    limit (then paired with their sender) a sender whose tier is not full; a blocked one
    gets no chain until its window frees up."""
    due: list[tuple[int, str | None]] = []
    for campaign_id in campaigns_with_due_work(engine):
        if not messaging_limit:
            due.append((campaign_id, None))
            continue
        plan = load_plan(engine, campaign_id, default_sender)
        if plan is not None and not tier_blocked(plan.sender_id):
            due.append((campaign_id, plan.sender_id))
    return due


def running_due(engine: Engine, default_sender: str) -> list[tuple[int, str, float]]:
    """(campaign id, sender number id, configured rate) of every running campaign with work
    due now, in one statement."""
    with engine.connect() as conn:
        rows = dispatch_db.running_with_due_work(conn)
    return [(cid, sender or default_sender, rate) for cid, sender, rate in rows]
