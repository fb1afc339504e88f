"""Retrying only the failed: the body of ``POST /campaigns/{id}/retry`` and its answer (also
``wa-campaigns retry --json``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from campaigns.domain.registry import Suppression
from campaigns.domain.retry import INT4_MAX, MAX_FILTER_ITEMS
from schemas.api import CampaignOut, integral

RetryState = Literal["error", "sending_failed"]
ErrorCode = Annotated[int, Field(strict=True, ge=0, le=INT4_MAX), BeforeValidator(integral)]


class RetryBody(BaseModel):
    """Which failed contacts to queue again; every field may be left out."""

    model_config = ConfigDict(extra="forbid")

    states: list[RetryState] | None = Field(
        None,
        max_length=MAX_FILTER_ITEMS,
        description="the states to retry; left out or empty: error and sending_failed",
    )
    reason_codes: list[Suppression] | None = Field(
        None,
        max_length=MAX_FILTER_ITEMS,
        description="only contacts with one of these reason codes (left out or empty: any)",
    )
    error_codes: list[ErrorCode] | None = Field(
        None,
        max_length=MAX_FILTER_ITEMS,
        description="only contacts whose platform error code is one of these (e.g. 131049)",
    )
    include_unknown: StrictBool = Field(
        False,
        description="also retry Error 'outcome unknown' contacts: the platform may already "
        "have delivered them (the answer then carries a warning)",
    )


class RetryQueued(BaseModel):
    """How many contacts of each state went back to retry_scheduled."""

    error: int
    sending_failed: int


class RetrySkipped(BaseModel):
    """Contacts the filter matched that were not queued, by reason."""

    opted_out: int
    unavailable: int
    blocked: int
    outcome_unknown: int = Field(description="not queued without include_unknown")


class RetryReport(BaseModel):
    campaign_id: int
    queued: RetryQueued
    total: int = Field(description="contacts queued (the sum of queued)")
    skipped: RetrySkipped
    warning: str | None = Field(
        description="set when outcome-unknown contacts were queued: they may get it twice"
    )
    campaign: CampaignOut = Field(description="the campaign after the command")
