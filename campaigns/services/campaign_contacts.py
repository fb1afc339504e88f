"""A campaign's contacts as operators read them: keyset pages and a streamed CSV export."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence

from sqlalchemy import Engine, RowMapping

from campaigns.domain.phones import PhoneOk, normalize_phone
from campaigns.domain.refusals import NotFound
from campaigns.domain.registry import person_id
from campaigns.domain.states import ContactState
from campaigns.storage import campaign_contacts as contacts_db
from campaigns.storage import campaigns as campaigns_db
from schemas.api import (
    ContactOut,
    ContactPage,
)


def page_contacts(
    engine: Engine,
    campaign_id: int,
    *,
    states: Sequence[ContactState] = (),
    after_id: int = 0,
    limit: int = 100,
    phone: str | None = None,
    upload_id: int | None = None,
) -> ContactPage:
    """A page of the campaign's contacts; ``phone`` narrows to one number: read with the
    campaign's region as an upload reads it (any format), else the phone cell exactly."""
    with engine.connect() as conn:
        campaign = campaigns_db.get_campaign(conn, campaign_id)
        if campaign is None:
            raise NotFound("campaign", campaign_id)
        person, raw = _phone_filter(phone, campaign["default_region"])
        rows = contacts_db.page_contacts(
            conn,
            campaign_id,
            states=states,
            after_id=after_id,
            limit=limit,
            person_id=person,
            phone_raw=raw,
            upload_id=upload_id,
        )
    items = [_contact_out(r) for r in rows]
    return ContactPage(items=items, next_after_id=items[-1].id if len(items) == limit else None)


def _phone_filter(phone: str | None, region: str) -> tuple[int | None, str | None]:
    """(person id, None) for a number, (None, the text) for anything else; (None, None)
    without a phone."""
    if phone is None or not phone.strip():
        return None, None
    result = normalize_phone(phone.strip(), region)
    if isinstance(result, PhoneOk):
        return person_id(result.e164), None
    return None, phone.strip()


def _contact_out(row: RowMapping) -> ContactOut:
    return ContactOut(
        id=row["id"],
        line=row["line_no"],
        phone_raw=row["phone_raw"],
        phone_e164=row["phone_e164"],
        state=ContactState(row["state"]),
        reason_code=row["reason_code"],
        reason=row["reason"],
        wamid=row["wamid"],
        attempts=row["attempts"],
        error_code=row["error_code"],
        error_detail=row["error_detail"],
        sent_at=row["sent_at"],
        delivered_at=row["delivered_at"],
        read_at=row["read_at"],
        variables=dict(row["variables"]),
    )


CSV_EXPORT_HEADER = (
    "line",
    "phone_raw",
    "phone_e164",
    "state",
    "reason",
    "wamid",
    "attempts",
    "error_code",
    "error_detail",
    "sent_at",
    "delivered_at",
    "read_at",
)


_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d .]*")


def neutralise_cell(value: str) -> str:
    """Defuses spreadsheet formulas (=, +, -, @, tab, CR first) with a leading apostrophe.

    Plain numbers such as an E.164 phone ("+4915...") are left alone: a spreadsheet reads them
    as numbers, never as formulas, and operators need them intact.
    """
    if value and value[0] in "=+-@\t\r" and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def export_contacts_csv(
    engine: Engine,
    campaign_id: int,
    *,
    states: Sequence[ContactState] = (),
    upload_id: int | None = None,
) -> Iterator[str]:
    """CSV text of the campaign's contacts (or one upload's), streamed a page at a time."""
    with engine.connect() as conn:
        if campaigns_db.get_campaign(conn, campaign_id) is None:
            raise NotFound("campaign", campaign_id)
    return _export_rows(engine, campaign_id, states, upload_id)


EXPORT_PAGE = 5000


def _export_rows(
    engine: Engine, campaign_id: int, states: Sequence[ContactState], upload_id: int | None
) -> Iterator[str]:
    """Pages of :data:`EXPORT_PAGE` contacts, each read in its own short transaction.

    The connection goes back to the pool before any row of its page is handed to the
    reader: a client that stalls (or reads a million rows slowly) holds no pooled
    connection and no snapshot while it does. Keyset paging by id keeps the pages
    consistent (a contact is listed once, in id order).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_EXPORT_HEADER)
    after_id = 0
    while True:
        with engine.connect() as conn:
            page = contacts_db.page_contacts(
                conn,
                campaign_id,
                states=states,
                after_id=after_id,
                limit=EXPORT_PAGE,
                upload_id=upload_id,
            )
        for n, row in enumerate(page, start=1):
            writer.writerow([_cell(row[name]) for name in _EXPORT_FIELDS])
            if n % 1000 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        if len(page) < EXPORT_PAGE:
            break
        after_id = int(page[-1]["id"])
    yield buffer.getvalue()


_EXPORT_FIELDS = ("line_no", *CSV_EXPORT_HEADER[1:])


def _cell(value: object) -> str:
    return "" if value is None else neutralise_cell(str(value))
