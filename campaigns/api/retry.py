"""Retrying only the failed: ``POST /campaigns/{id}/retry``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from campaigns.api.deps import CampaignId, EngineDep, FlagsDep
from campaigns.domain.retry import retry_filter
from campaigns.services import retry
from schemas.api import Problem
from schemas.retry import RetryBody, RetryReport

router = APIRouter(tags=["campaigns"])

_REFUSED: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such campaign"},
    409: {
        "model": Problem,
        "description": "a draft, scheduled or cancelled campaign (retry_not_allowed)",
    },
    422: {"model": Problem, "description": "a filter a retry cannot take; nothing changed"},
}


@router.post("/campaigns/{campaign_id}/retry", response_model=RetryReport, responses=_REFUSED)
def retry_failed(
    campaign_id: CampaignId, engine: EngineDep, flags: FlagsDep, body: RetryBody | None = None
) -> RetryReport:
    """Failed contacts (error, sending_failed) back to retry_scheduled, due now, and the
    campaign back to running (from paused or completed). A person who is opted out,
    unavailable or blocked is never retried; outcome-unknown contacts only with
    `include_unknown` (and a warning). Nothing matching: 200 with total 0, nothing changed."""
    from workers.dispatch import wake_dispatch

    body = body or RetryBody()
    rule = retry_filter(
        states=body.states,
        reason_codes=[code.value for code in body.reason_codes or ()],
        error_codes=body.error_codes,
        include_unknown=body.include_unknown,
    )
    report = retry.retry_failed(engine, flags, campaign_id, rule)
    if report.total:
        wake_dispatch()
    return report
