"""The contact registry over HTTP (``/contacts``) and the CLI's --json output, and the
contacts check's shape (ours and the provider's ``/v1/contacts``, seeds 002 and 004)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from campaigns.domain.contact_checks import CheckStatus

MAX_BULK = 10_000
MAX_CHECK = 1_000

Text = Annotated[str, StringConstraints(max_length=500, strip_whitespace=True)]


class PersonCampaign(BaseModel):
    """One campaign contact of the person."""

    campaign_id: int
    campaign_name: str
    campaign_status: str
    contact_id: int
    state: str
    reason_code: str | None
    reason: str | None
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None


class PersonOut(BaseModel):
    """A person's record (``GET /contacts/{phone}``)."""

    phone_e164: str | None
    wa_id: str | None
    status: Literal["UNAVAILABLE", "BLOCKED"] | None = Field(
        description="seed 000: empty, UNAVAILABLE (a send proved it; until the record is "
        "removed) or BLOCKED (an operator)"
    )
    unavailable_since: datetime | None
    unavailable_code: int | None = Field(description="the code that proved it: 131026 or 1013")
    blocked_at: datetime | None
    blocked_reason: str | None
    opted_in: bool
    opted_in_at: datetime | None
    opt_in_source: str | None
    opted_out: bool
    opted_out_at: datetime | None
    opt_out_source: str | None = Field(
        description="whatsapp reply, platform 131050, user_preferences, operator, ..."
    )
    check_status: str | None = Field(description="the last contacts check: valid or invalid")
    checked_at: datetime | None
    first_seen_at: datetime | None
    last_sent_at: datetime | None
    removed_at: datetime | None = Field(
        None,
        description="set when the record was removed while an opt-out stood: only the "
        "opt-out is left (a removed record without one answers 404)",
    )
    campaigns: list[PersonCampaign] = Field(
        default_factory=list, description="the person's campaign contacts, newest first"
    )


class BlockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text | None = Field(None, description="why (shown with the record)")


class SourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Text | None = Field(None, description="where it came from (default: operator)")


class RemovedOut(BaseModel):
    phone_e164: str | None
    removed: bool = True
    opted_out: bool = Field(description="an opt-out stood: it stays (only an opt-in clears it)")


class SuppressedOut(BaseModel):
    """A campaign's contacts the registry refused, by reason code."""

    campaign_id: int
    reasons: dict[str, int] = Field(
        description="blocked, unavailable, opted_out, not_opted_in (at upload or send time), "
        "not_on_whatsapp (its contacts check)"
    )
    total: int


class BulkOperation(StrEnum):
    BLOCK = "block"
    UNBLOCK = "unblock"
    OPT_IN = "opt_in"
    OPT_OUT = "opt_out"
    REMOVE = "remove"


class BulkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operation: BulkOperation
    contacts: list[str] = Field(min_length=1, max_length=MAX_BULK)
    reason: Text | None = Field(
        None, description="block reason, or the opt-in / opt-out source (default: operator)"
    )


class BulkResult(StrEnum):
    SUCCESS = "SUCCESS"
    NOT_FOUND = "NOT_FOUND"
    FAILURE = "FAILURE"


class BulkItem(BaseModel):
    input: str
    phone_e164: str | None
    result: BulkResult
    message: str | None = None


class BulkReport(BaseModel):
    results: list[BulkItem]


class CheckBody(BaseModel):
    """``POST /contacts/check`` and the provider's ``POST /v1/contacts``."""

    model_config = ConfigDict(extra="forbid")

    blocking: Literal["wait", "no_wait"] = "no_wait"
    # Anything: an item that is no phone number is "failed" on its own, never the list.
    contacts: list[Any] = Field(max_length=MAX_CHECK)
    force_check: StrictBool = False


class CheckItem(BaseModel):
    input: Any = Field(description="the item as it was sent")
    status: CheckStatus
    wa_id: str | None = None
    message: str | None = Field(None, description="why, for a failed check")


class CheckOut(BaseModel):
    contacts: list[CheckItem]
