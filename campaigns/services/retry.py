"""Retrying only the failed, as a use case: one transaction with the campaign row locked, one
statement for the contacts, then the campaign runs again and its pause flag comes down.

What is retried is ``campaigns.domain.retry`` (pure); when the command is legal is
``campaigns.domain.admin.check_retry``. The entrypoints wake dispatch when contacts were
queued (as after start and resume): a retried contact is simply due now.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from campaigns.domain import admin as admin_rules
from campaigns.domain import retry as rules
from campaigns.domain.refusals import NotFound
from campaigns.domain.states import CampaignStatus, ContactState
from campaigns.services.admin import PauseFlagStore
from campaigns.services.campaigns import get_campaign
from campaigns.storage import campaigns as campaigns_db
from campaigns.storage import retry as retry_db
from schemas.retry import RetryQueued, RetryReport, RetrySkipped

S = CampaignStatus
C = ContactState


def _summary(counts: rules.Tally) -> str:
    by_state = ", ".join(f"{s.value} {n}" for s, n in counts.queued.items())
    return f"retry: {counts.total} queued ({by_state})"


def _run_again(conn: Connection, campaign_id: int, status: CampaignStatus, detail: str) -> bool:
    """The campaign after contacts were queued: running (whether it moved to it)."""
    target = admin_rules.check_retry(status)
    if target is None:  # running already: the command is logged beside its status changes
        retry_db.log_retry(conn, campaign_id, status, detail=detail)
        return False
    campaigns_db.set_campaign_status(
        conn,
        campaign_id,
        status,
        target,
        source="admin",
        detail=detail,
        extra={"status_reason": None, "finished_at": None},
    )
    return True


def retry_failed(
    engine: Engine, flags: PauseFlagStore, campaign_id: int, rule: rules.RetryFilter
) -> RetryReport:
    """Matching failed contacts -> Retry scheduled, and the campaign -> running; nothing
    matching (or everything skipped) changes nothing. Refused (409) for a campaign that is
    draft, scheduled or cancelled, before any contact is read."""
    with engine.begin() as conn:
        row = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
        if row is None:
            raise NotFound("campaign", campaign_id)
        status = S(row["status"])
        admin_rules.check_retry(status)
        counts = rules.tally(retry_db.requeue_failed(conn, campaign_id, rule))
        moved = counts.total > 0 and _run_again(conn, campaign_id, status, _summary(counts))
    if moved:
        # After the commit, as resume does: the flag of a paused (or paused, then
        # completed) campaign would stall the sends it now makes.
        flags.clear(campaign_id)
    return RetryReport(
        campaign_id=campaign_id,
        queued=RetryQueued(
            error=counts.queued[C.ERROR], sending_failed=counts.queued[C.SENDING_FAILED]
        ),
        total=counts.total,
        skipped=RetrySkipped(**{v.value: n for v, n in counts.skipped.items()}),
        warning=rules.warning(counts),
        campaign=get_campaign(engine, campaign_id),
    )
