"""Bodies of the HTTP API and the CLI's --json output."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, cast
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.config import JsonDict

from campaigns.domain.parameters import invalid_parameter_name
from campaigns.domain.send_window import (
    SendWindow,
    WindowError,
    check_zone,
    format_window,
    parse_window,
)
from campaigns.domain.states import CampaignStatus, ContactState


def validation_message(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic's errors as one line, ``field: reason; ...`` (CLI and HTTP refusals)."""
    return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in errors)


RegionCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$", to_upper=True)]

BIGINT_MAX = 2**63 - 1
MAX_ID = 2**53 - 1
"""The largest id the API takes (in a path, a query or a body): a larger number can name
nothing, and is a 422, never a database error. Ids are Postgres bigints counting from 1;
2**53 - 1 is the largest integer a JSON number holds exactly in every client (JavaScript's
MAX_SAFE_INTEGER), so the published ``maximum`` means the same to every validator."""


def integral(value: object) -> object:
    """JSON Schema's integer: 497.0 is one (a float without a fraction); "497" and true are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[StrictInt, BeforeValidator(integral)]
"""An integer as JSON Schema has it: what the published ``"type": "integer"`` takes, no more.
Bounds go before the validator (see ``Id``), or pydantic cannot publish them as
minimum/maximum."""
Id = Annotated[int, Field(strict=True, ge=-MAX_ID, le=MAX_ID), BeforeValidator(integral)]


def date_time_text(value: object) -> object:
    """JSON Schema's date-time is text (RFC 3339); a number is no time here, though pydantic
    would read it as seconds since 1970."""
    if value is None or isinstance(value, str | datetime):
        return value
    raise ValueError("a date-time is text with a time zone, e.g. 2031-05-04T12:00:00+02:00")


JsonDateTime = Annotated[datetime, BeforeValidator(date_time_text)]

# C0 controls (NUL included: Postgres text cannot hold it), DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
CONTROL_CHARS_PATTERN = "^[^\x00-\x1f\x7f-\x9f]*$"


def _no_control_chars(value: str) -> str:
    found = _CONTROL.search(value)
    if found is not None:
        raise ValueError(
            f"must not contain control characters (found U+{ord(found.group()):04X} at "
            f"position {found.start()})"
        )
    return value


PlainText = Annotated[
    str,
    AfterValidator(_no_control_chars),
    # Published as a pattern (the same rule) so that a client's validator refuses them too.
    Field(json_schema_extra={"pattern": CONTROL_CHARS_PATTERN}),
]
"""One line of text: no NUL, newline or other control character."""


# The send window's shape, published and enforced alike (explicit classes: a validator's \\d
# or \\s may be Unicode-wide); the times themselves are checked by parse_window: 24:00 is
# midnight at the end of the day, and a start equal to its end is refused.
_CLOCK = "([01]?[0-9]|2[0-3]):[0-5][0-9]|24:00"
WINDOW_PATTERN = f"^ *({_CLOCK}) *[-\u2013] *({_CLOCK}) *$"


@lru_cache(maxsize=1)
def window_zones() -> list[str]:
    """The zones a send window takes: IANA names with a region (``Europe/Berlin``) and UTC."""
    return sorted(z for z in available_timezones() if "/" in z or z == "UTC")


_ZONE_SCHEMA = cast("JsonDict", {"anyOf": [{"enum": window_zones()}, {"type": "null"}]})

WindowText = Annotated[str, Field(json_schema_extra={"pattern": WINDOW_PATTERN})]

# The cross-field rules the schema can express: a window and its zone come together, or
# neither; named variables are lowercase letters, digits and _ (as the validator checks).
_CROSS_FIELD: dict[str, Any] = {
    "allOf": [
        {
            "anyOf": [
                {
                    "required": ["send_window", "send_window_tz"],
                    "properties": {
                        "send_window": {"type": "string"},
                        "send_window_tz": {"type": "string"},
                    },
                },
                {
                    "properties": {
                        "send_window": {"type": "null"},
                        "send_window_tz": {"type": "null"},
                    }
                },
            ]
        },
        {
            "anyOf": [
                {"properties": {"named_variables": {"const": False}}},
                {"properties": {"body_variables": {"items": {"pattern": "^[a-z0-9_]+$"}}}},
            ]
        },
    ]
}


# What str.strip() removes (besides the control characters, refused anyway): a name of only
# these is blank. Spelled out, as a validator's \\s differs from Python's.
_SPACES = "\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NAME_PATTERN = f"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f{_SPACES}][^\x00-\x1f\x7f-\x9f]*$"


def _stripped(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


CampaignName = Annotated[
    str,
    StringConstraints(max_length=200),
    AfterValidator(_no_control_chars),
    AfterValidator(_stripped),
    Field(json_schema_extra={"pattern": NAME_PATTERN}),
]
"""At most 200 characters as sent, no control character, not blank; stored stripped."""


def _number(value: object) -> object:
    """A JSON number only: "80" and true are not (the schema says number)."""
    if isinstance(value, str | bool):
        raise ValueError("must be a number")
    return value


# Stored as numeric(8, 2): below 0.01 would round to a rate of 0.
Rate = Annotated[
    Decimal,
    Field(ge=Decimal("0.01"), le=1000),
    BeforeValidator(_number),
    WithJsonSchema({"type": "number", "minimum": 0.01, "maximum": 1000}),
]


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_CROSS_FIELD)

    name: CampaignName
    template: PlainText | None = Field(None, description="approved WhatsApp template name")
    language: PlainText = Field("en", description="template language code")
    region: RegionCode = Field(description="default region for numbers without a country code")
    body_variables: list[PlainText] = Field(
        default_factory=list, description="CSV columns that fill the template body, in order"
    )
    named_variables: StrictBool = Field(
        False,
        description="the template uses named variables ({{first_name}}): each body variable is "
        "sent with its name as parameter_name, so body_variables must be the template's names "
        "(lowercase letters, digits, _)",
    )
    phone_number_id: PlainText | None = Field(
        None, description="sender; default WHATSAPP_PHONE_NUMBER_ID"
    )
    rate_per_s: Rate = Field(
        Decimal(80), description="messages per second at most", json_schema_extra={"default": 80}
    )
    max_attempts: JsonInt = Field(5, ge=1, le=20)
    send_window: Annotated[str, Field(json_schema_extra={"pattern": WINDOW_PATTERN})] | None = (
        Field(
            None,
            description="daily window in the recipient's local time, HH:MM-HH:MM (may wrap "
            "midnight: 22:00-06:00; start and end must differ); null: no window. Needs "
            "send_window_tz",
            examples=["09:00-20:00"],
        )
    )
    send_window_tz: str | None = Field(
        None,
        description="IANA zone (Europe/Berlin) for numbers whose own zones do not settle the "
        "window; required with send_window, and only with it",
        validate_default=True,  # so that a window without a zone is refused
        json_schema_extra=_ZONE_SCHEMA,
    )
    require_opt_in: StrictBool = Field(
        False,
        description="refuse people without an opt-in in the contact registry (or in the "
        "upload's opted_in column) as invalid_record not_opted_in",
    )
    check_contacts: StrictBool = Field(
        False,
        description="check every valid contact (POST {WHATSAPP_CONTACTS_URL}/v1/contacts, rate "
        "limited per sender) before the first send; invalid ones end sending_failed "
        "not_on_whatsapp without a send",
    )

    @field_validator("named_variables")
    @classmethod
    def _variable_names(cls, value: bool, info: ValidationInfo) -> bool:
        bad = [n for n in info.data.get("body_variables", []) if invalid_parameter_name(n)]
        if value and bad:
            raise ValueError(
                f"named variables must be lowercase letters, digits and _: {', '.join(bad)}"
            )
        return value

    @field_validator("send_window")
    @classmethod
    def _window_format(cls, value: str | None) -> str | None:
        if value is None:
            return None
        window = parse_window(value)  # a WindowError is a 422 / exit 2
        if re.fullmatch(WINDOW_PATTERN, value) is None:  # the published shape, no wider
            raise WindowError(f"send window {value!r} is not HH:MM-HH:MM, e.g. 09:00-20:00")
        return format_window(*window)

    @field_validator("send_window_tz")
    @classmethod
    def _window_zone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "send_window" not in info.data:
            return value  # the window itself was refused: that message is enough
        if value is None:
            if info.data["send_window"] is not None:
                raise WindowError(
                    "send_window needs send_window_tz, the zone for numbers whose own zones "
                    "do not settle it (e.g. Europe/Berlin)"
                )
            return None
        if info.data["send_window"] is None:
            raise WindowError("send_window_tz is only used with a send_window")
        check_zone(value)
        if value not in window_zones():
            raise WindowError(f"unknown time zone {value!r}: use an IANA name like Europe/Berlin")
        return value

    def window(self) -> SendWindow | None:
        """The validated window as dispatch uses it; None without one."""
        if self.send_window is None or self.send_window_tz is None:
            return None
        start, end = parse_window(self.send_window)
        return SendWindow(start, end, self.send_window_tz)


class CampaignOut(BaseModel):
    id: int
    name: str
    status: CampaignStatus
    status_reason: str | None
    template: str | None
    language: str
    region: str
    body_variables: list[str]
    named_variables: bool = Field(False, description="body variables are sent by name")
    phone_number_id: str | None
    rate_per_s: float
    max_attempts: int
    send_window: str | None = Field(None, description="HH:MM-HH:MM, recipient's local time")
    send_window_tz: str | None = Field(None, description="fallback zone of the window")
    require_opt_in: bool = Field(False, description="people without an opt-in are refused")
    check_contacts: bool = Field(False, description="contacts are checked before the first send")
    contacts_checked_at: datetime | None = Field(
        None, description="when that check finished (null: not done, or not asked for)"
    )
    scheduled_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int] = Field(description="contacts per state, every state listed")
    total: int
    held: int = Field(
        0,
        description="sends the platform accepted but held for a quality assessment "
        "(message_status held_for_quality_assessment); they may never be delivered",
    )
    rate_now_per_s: float = Field(0.0, description="messages accepted per second, last 10 s")
    eta_seconds: float | None = Field(
        None, description="time left at the current (or configured) rate; null when idle"
    )


class UploadOut(BaseModel):
    id: int
    campaign_id: int
    filename: str
    status: str = Field(description="received, processing, completed, failed or refused")
    size_bytes: int
    encoding: str | None
    delimiter: str | None
    phone_column: str | None
    columns: list[str] | None
    rows_read: int
    valid: int
    invalid: int
    reasons: dict[str, int]
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class PreviewProblemOut(BaseModel):
    code: str = Field(description="the refusal code the upload would answer with")
    message: str


class PreviewRowOut(BaseModel):
    line: int = Field(description="record number as a spreadsheet shows it (header: line 1)")
    cells: list[str] = Field(description="the record's fields, in the header's order")
    phone_e164: str | None = None
    valid: bool | None = Field(
        None, description="false: it would be stored invalid_record; null: no phone column"
    )
    reason_code: str | None = None
    reason: str | None = None


class UploadPreview(BaseModel):
    """The file's first records as the upload will read them; nothing is stored."""

    encoding: str | None
    delimiter: str | None
    columns: list[str]
    phone_column: str | None = Field(description="null: none found (or the one named is absent)")
    variables: dict[str, str | None] = Field(
        description="each template variable of the campaign and the column that fills it "
        "(null: no column; the upload would be refused)"
    )
    rows: list[PreviewRowOut]
    problems: list[PreviewProblemOut] = Field(
        description="why the upload would be refused as it is (empty: it would be accepted); "
        "rows that would be invalid_record are not problems, see rows[].valid"
    )
    bytes_read: int = Field(description="how much of the body was read (the file's head)")


class ContactOut(BaseModel):
    id: int
    line: int
    phone_raw: str
    phone_e164: str | None
    state: ContactState
    reason_code: str | None = None
    reason: str | None
    wamid: str | None
    attempts: int
    error_code: int | None
    error_detail: str | None
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    variables: dict[str, str]


class ContactPage(BaseModel):
    items: list[ContactOut]
    next_after_id: int | None = Field(description="pass as after_id for the next page")


class TokenCreated(BaseModel):
    id: int
    name: str
    token: str = Field(description="shown once; only its sha256 is stored")


class TokenInfo(BaseModel):
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None = Field(description="null while the token works")


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: JsonDateTime | None = Field(None, description="start later (with a time zone); now if null")


class RemoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_ids: list[Id] = Field(default_factory=list, max_length=10_000)
    phones: list[PlainText] = Field(default_factory=list, max_length=10_000)


class RemoveResult(StrEnum):
    SUCCESS = "SUCCESS"
    NOT_FOUND = "NOT_FOUND"
    FAILURE = "FAILURE"


class RemoveItem(BaseModel):
    contact: str = Field(description="the id or phone as given")
    result: RemoveResult
    contact_id: int | None = None
    message: str | None = None


class RemoveReport(BaseModel):
    campaign_id: int
    items: list[RemoveItem]
    removed: int


class Problem(BaseModel):
    """Every refusal: a stable code and a message for the operator."""

    code: str
    message: str
