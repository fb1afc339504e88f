"""All SQL of the webhook inbox and of applying delivery statuses.

Functions take a Connection and never commit; :mod:`campaigns.services.webhooks` owns the
transactions. Set-based throughout: a batch of thousands of statuses is a handful of
statements, never one statement per status. Bulk rows travel as one JSON parameter
(``json_to_recordset``): psycopg adapts a Python list to a Postgres array element by element
in Python (20-60 ms for 10,000 values), ``json.dumps`` does the same in well under 3 ms.
Contacts are locked in id order, so two appliers (or an applier and a dispatch record of
its own batch, ordered the same way) wait for each other instead of deadlocking.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, RowMapping, TextClause, text

from campaigns.domain.states import TERMINAL_CONTACT_STATES, contact_sources
from campaigns.domain.webhooks import WEBHOOK_SETTLED_STATES, WEBHOOK_TARGETS
from campaigns.storage.sql import in_list


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def rows_json(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows for ``json_to_recordset``: datetimes as ISO 8601, UUIDs as text."""
    return json.dumps(list(rows), default=_json_value, separators=(",", ":"))


# --------------------------------------------------------------------------- inbox


def insert_inbox_many(conn: Connection, rows: Sequence[tuple[bytes, str, str | None]]) -> list[int]:
    """Stores (body, status, reason) rows in one INSERT; ids in the order given."""
    if not rows:
        return []
    params: dict[str, Any] = {}
    for i, (body, status, reason) in enumerate(rows):
        params[f"b{i}"], params[f"s{i}"], params[f"r{i}"] = body, status, reason
    return [int(i) for i in conn.execute(_insert_inbox(len(rows)), params).scalars()]


@lru_cache(maxsize=128)
def _insert_inbox(count: int) -> TextClause:
    """The statement for ``count`` rows, built once: the receiver runs it ~100 times a second
    with a handful of sizes, and a new ``text()`` parses its binds every time."""
    values = ", ".join(f"(:b{i}, :s{i}, :r{i}, {i})" for i in range(count))
    return text(
        f"""
        WITH ins AS (
            INSERT INTO webhook_inbox (body, status, reason)
            SELECT v.body, v.status, v.reason
            FROM (VALUES {values}) AS v(body, status, reason, ord)
            ORDER BY v.ord
            RETURNING id
        )
        SELECT id FROM ins ORDER BY id
        """
    )


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    body: bytes
    received_at: datetime
    tries: int


def claim_inbox(conn: Connection, limit: int) -> list[InboxRow]:
    """Locks up to ``limit`` due pending rows; rows another applier holds are skipped."""
    rows = conn.execute(
        text(
            """
            SELECT id, body, received_at, tries FROM webhook_inbox
            WHERE status = 'pending' AND next_try_at <= now()
            ORDER BY next_try_at, id
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
            """
        ),
        {"limit": limit},
    )
    return [InboxRow(int(r.id), bytes(r.body), r.received_at, int(r.tries)) for r in rows]


def finish_inbox(conn: Connection, outcomes: Sequence[tuple[int, str, str | None, int]]) -> None:
    """Marks claimed rows (id, status, reason, statuses) applied / rejected."""
    if not outcomes:
        return
    conn.execute(
        text(
            """
            UPDATE webhook_inbox i
            SET status = v.status, reason = v.reason, statuses = v.n,
                tries = i.tries + 1, applied_at = now()
            FROM json_to_recordset(CAST(:rows AS json))
                 AS v(id bigint, status text, reason text, n integer)
            WHERE i.id = v.id
            """
        ),
        {
            "rows": rows_json(
                {"id": i, "status": st, "reason": reason, "n": n}
                for i, st, reason, n in sorted(outcomes)
            )
        },
    )


# Inbox ids grow with received_at, so the rows past retention are the ids below the first
# recent one: found by walking the primary key from its low end, never by scanning the table.
# Rejected / unmatched bodies stay for operators; a body with a status still waiting for its
# contact stays until that retry is settled (the retry row would go with it).
_PRUNE_SQL = """
WITH edge AS (
    SELECT COALESCE(
        (SELECT id FROM webhook_inbox
         WHERE received_at >= now() - make_interval(secs => :older_than_s)
         ORDER BY id LIMIT 1),
        (SELECT max(id) + 1 FROM webhook_inbox)) AS id
), doomed AS (
    SELECT i.id FROM webhook_inbox i, edge
    WHERE i.id < edge.id AND i.status = 'applied'
      AND NOT EXISTS (SELECT 1 FROM webhook_status_retries r
                      WHERE r.inbox_id = i.id AND r.state = 'waiting')
    ORDER BY i.id
    LIMIT :limit
    FOR UPDATE OF i SKIP LOCKED
)
DELETE FROM webhook_inbox w USING doomed WHERE w.id = doomed.id
"""


def prune_applied(conn: Connection, *, older_than_s: float, limit: int) -> int:
    """Deletes up to ``limit`` applied bodies received more than ``older_than_s`` ago."""
    result = conn.execute(text(_PRUNE_SQL), {"older_than_s": older_than_s, "limit": limit})
    return int(result.rowcount)


def defer_inbox(
    conn: Connection, inbox_id: int, *, reason: str, delay_s: float, give_up: bool
) -> None:
    """A row whose apply raised: try it again later, or reject it after the last try."""
    conn.execute(
        text(
            """
            UPDATE webhook_inbox
            SET tries = tries + 1, reason = :reason,
                next_try_at = now() + make_interval(secs => :delay),
                status = CASE WHEN :give_up THEN 'rejected' ELSE status END,
                applied_at = CASE WHEN :give_up THEN now() ELSE applied_at END
            WHERE id = :id
            """
        ),
        {"id": inbox_id, "reason": reason, "delay": delay_s, "give_up": give_up},
    )


# --------------------------------------------------------------------------- contacts

CONTACT_COLUMNS = (
    "id",
    "campaign_id",
    "state",
    "wamid",
    "wa_id",
    "attempt_id",
    "sent_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "error_code",
    "error_detail",
)


def lock_contacts(
    conn: Connection, wamids: Iterable[str], attempt_ids: Iterable[uuid.UUID]
) -> list[RowMapping]:
    """The contacts these statuses name, by wamid or attempt id, locked in id order."""
    wamid_list = sorted(set(wamids))
    attempt_list = sorted({str(a) for a in attempt_ids})
    if not wamid_list and not attempt_list:
        return []
    rows = conn.execute(
        text(
            f"""
            SELECT {", ".join(CONTACT_COLUMNS)} FROM contacts
            WHERE wamid = ANY(ARRAY(SELECT json_array_elements_text(CAST(:wamids AS json))))
               OR attempt_id = ANY(ARRAY(
                    SELECT CAST(json_array_elements_text(CAST(:attempt_ids AS json)) AS uuid)))
            ORDER BY id
            FOR UPDATE
            """
        ),
        {"wamids": json.dumps(wamid_list), "attempt_ids": json.dumps(attempt_list)},
    )
    return list(rows.mappings())


@dataclass(frozen=True, slots=True)
class Settlement:
    """The new values of one contact after a batch of its statuses (None: unchanged)."""

    contact_id: int
    from_state: str
    to_state: str
    wamid: str | None
    wa_id: str | None
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    failed_at: datetime | None
    error_code: int | None
    error_detail: str | None


@dataclass(frozen=True, slots=True)
class EventRow:
    contact_id: int
    campaign_id: int
    from_state: str
    to_state: str
    detail: str


def _legal_pairs() -> str:
    # The guard is the transition table itself, for every state a webhook may write.
    pairs = sorted(
        (source.value, target.value)
        for target in WEBHOOK_TARGETS
        for source in contact_sources(target)
    )
    return ", ".join(f"('{s}', '{t}')" for s, t in pairs)


_TERMINAL = in_list(TERMINAL_CONTACT_STATES)
_SETTLED = in_list(WEBHOOK_SETTLED_STATES)  # where a late status may still fill a timestamp

_SETTLE_SQL = f"""
WITH v AS (
    SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS v(
        id bigint, from_state text, to_state text, wamid text, wa_id text,
        sent_at timestamptz, delivered_at timestamptz, read_at timestamptz,
        failed_at timestamptz, error_code integer, error_detail text)
), upd AS (
    UPDATE contacts c SET
        state = v.to_state,
        wamid = COALESCE(c.wamid, v.wamid),
        wa_id = COALESCE(c.wa_id, v.wa_id),
        sent_at = COALESCE(c.sent_at, v.sent_at),
        delivered_at = COALESCE(c.delivered_at, v.delivered_at),
        read_at = COALESCE(c.read_at, v.read_at),
        failed_at = COALESCE(c.failed_at, v.failed_at),
        -- A Retry scheduled contact's error was the answer to a send the platform took.
        error_code = CASE WHEN v.to_state = 'delivery_failed' AND c.state <> 'delivery_failed'
                          THEN v.error_code
                          WHEN c.state = 'retry_scheduled' THEN NULL ELSE c.error_code END,
        error_detail = CASE WHEN v.to_state = 'delivery_failed' AND c.state <> 'delivery_failed'
                            THEN v.error_detail
                            WHEN c.state = 'retry_scheduled' THEN NULL ELSE c.error_detail END,
        lease_expires_at = CASE WHEN v.to_state = 'in_progress'
                                THEN c.lease_expires_at END,
        finished_at = CASE WHEN v.to_state IN ({_TERMINAL})
                           THEN COALESCE(c.finished_at, now()) ELSE c.finished_at END,
        updated_at = now()
    FROM v
    WHERE c.id = v.id AND c.state = v.from_state
      AND ((v.to_state = c.state AND c.state IN ({_SETTLED}))
           OR (c.state, v.to_state) IN ({_legal_pairs()}))
    RETURNING c.id
), ins AS (
    INSERT INTO contact_events (contact_id, campaign_id, from_state, to_state, source, detail)
    SELECT e.contact_id, e.campaign_id, e.from_state, e.to_state, 'webhook', e.detail
    FROM json_to_recordset(CAST(:events AS json))
         AS e(ord integer, contact_id bigint, campaign_id bigint, from_state text,
              to_state text, detail text)
    JOIN upd ON upd.id = e.contact_id
    ORDER BY e.ord
    RETURNING 1
)
SELECT (SELECT count(*) FROM upd) AS updated, (SELECT count(*) FROM ins) AS events
"""


def write_settlements(
    conn: Connection, settlements: Sequence[Settlement], events: Sequence[EventRow]
) -> tuple[int, int]:
    """One statement: every changed contact of the batch, and its transitions in the log.

    The WHERE guard (state as read under the lock, and a legal move of the table) refuses
    anything else; an event is written only for a contact whose update went through.
    """
    if not settlements:
        return 0, 0
    ordered = sorted(settlements, key=lambda s: s.contact_id)
    row = conn.execute(
        text(_SETTLE_SQL),
        {
            "rows": rows_json(
                {
                    "id": s.contact_id,
                    "from_state": s.from_state,
                    "to_state": s.to_state,
                    "wamid": s.wamid,
                    "wa_id": s.wa_id,
                    "sent_at": s.sent_at,
                    "delivered_at": s.delivered_at,
                    "read_at": s.read_at,
                    "failed_at": s.failed_at,
                    "error_code": s.error_code,
                    "error_detail": s.error_detail,
                }
                for s in ordered
            ),
            "events": rows_json(
                {
                    "ord": ord_,
                    "contact_id": e.contact_id,
                    "campaign_id": e.campaign_id,
                    "from_state": e.from_state,
                    "to_state": e.to_state,
                    "detail": e.detail,
                }
                for ord_, e in enumerate(events)
            ),
        },
    ).one()
    return int(row.updated), int(row.events)


# --------------------------------------------------------------------------- status retries


@dataclass(frozen=True, slots=True)
class ParkedStatus:
    inbox_id: int
    wamid: str
    attempt_id: uuid.UUID | None
    status: str
    status_at: datetime
    recipient_id: str | None
    error_code: int | None
    error_detail: str | None


def park_statuses(
    conn: Connection, parked: Sequence[ParkedStatus], *, delay_s: float, state: str = "waiting"
) -> None:
    """Keeps statuses no contact matched, to be tried again after ``delay_s``."""
    if not parked:
        return
    conn.execute(
        text(
            """
            INSERT INTO webhook_status_retries
                (inbox_id, wamid, attempt_id, status, status_at, recipient_id, error_code,
                 error_detail, state, tries, next_try_at, finished_at)
            SELECT p.inbox_id, p.wamid, p.attempt_id, p.status, p.status_at, p.recipient_id,
                   p.error_code, p.error_detail, :state, 1,
                   now() + make_interval(secs => :delay),
                   CASE WHEN :state = 'waiting' THEN NULL ELSE now() END
            FROM json_to_recordset(CAST(:rows AS json)) AS p(
                inbox_id bigint, wamid text, attempt_id uuid, status text,
                status_at timestamptz, recipient_id text, error_code integer, error_detail text)
            """
        ),
        {
            "rows": rows_json(
                {
                    "inbox_id": p.inbox_id,
                    "wamid": p.wamid,
                    "attempt_id": p.attempt_id,
                    "status": p.status,
                    "status_at": p.status_at,
                    "recipient_id": p.recipient_id,
                    "error_code": p.error_code,
                    "error_detail": p.error_detail,
                }
                for p in parked
            ),
            "delay": delay_s,
            "state": state,
        },
    )


@dataclass(frozen=True, slots=True)
class RetryRow:
    id: int
    tries: int
    age_s: float
    status: ParkedStatus


def claim_retries(conn: Connection, limit: int) -> list[RetryRow]:
    rows = conn.execute(
        text(
            """
            SELECT id, inbox_id, wamid, attempt_id, status, status_at, recipient_id,
                   error_code, error_detail, tries,
                   extract(epoch FROM now() - created_at) AS age_s
            FROM webhook_status_retries
            WHERE state = 'waiting' AND next_try_at <= now()
            ORDER BY next_try_at, id
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
            """
        ),
        {"limit": limit},
    )
    return [
        RetryRow(
            id=int(r.id),
            tries=int(r.tries),
            age_s=float(r.age_s),
            status=ParkedStatus(
                inbox_id=int(r.inbox_id),
                wamid=r.wamid,
                attempt_id=r.attempt_id,
                status=r.status,
                status_at=r.status_at,
                recipient_id=r.recipient_id,
                error_code=r.error_code,
                error_detail=r.error_detail,
            ),
        )
        for r in rows
    ]


def finish_retries(
    conn: Connection,
    *,
    applied: Sequence[int],
    again: Sequence[tuple[int, int, float]],
    given_up: Sequence[int],
) -> None:
    """applied: matched now; again: (id, tries, delay_s) to try later; given_up: unmatched."""
    if applied:
        conn.execute(
            text(
                "UPDATE webhook_status_retries SET state = 'applied', tries = tries + 1, "
                "finished_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"ids": sorted(applied)},
        )
    if again:
        conn.execute(
            text(
                """
                UPDATE webhook_status_retries r
                SET tries = v.tries, next_try_at = now() + make_interval(secs => v.delay)
                FROM json_to_recordset(CAST(:rows AS json))
                     AS v(id bigint, tries integer, delay double precision)
                WHERE r.id = v.id
                """
            ),
            {"rows": rows_json({"id": i, "tries": t, "delay": d} for i, t, d in sorted(again))},
        )
    if given_up:
        conn.execute(
            text(
                "UPDATE webhook_status_retries SET state = 'unmatched', tries = tries + 1, "
                "finished_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"ids": sorted(given_up)},
        )


def mark_inbox_unmatched(conn: Connection, inbox_ids: Iterable[int]) -> None:
    """An inbox row with a status given up on shows as unmatched, with how many."""
    ids = sorted(set(inbox_ids))
    if not ids:
        return
    conn.execute(
        text(
            """
            UPDATE webhook_inbox i
            SET status = 'unmatched',
                reason = (SELECT count(*) FROM webhook_status_retries r
                          WHERE r.inbox_id = i.id AND r.state = 'unmatched')
                         || ' status(es) matched no contact'
            WHERE i.id = ANY(CAST(:ids AS bigint[])) AND i.status IN ('applied', 'unmatched')
            """
        ),
        {"ids": ids},
    )


# --------------------------------------------------------------------------- inbound messages


@dataclass(frozen=True, slots=True)
class InboundRow:
    inbox_id: int
    wamid: str
    from_wa_id: str | None  # None: a user known only by a username wrote
    from_user_id: str | None
    phone_number_id: str | None
    type: str
    text: str | None
    sent_at: datetime
    raw: dict[str, Any]


def insert_inbound(
    conn: Connection, rows: Sequence[InboundRow]
) -> list[tuple[str | None, str | None, str | None]]:
    """Stores new inbound messages; returns (from, from user id, text) of those not seen
    before."""
    if not rows:
        return []
    inserted = conn.execute(
        text(
            """
            INSERT INTO inbound_messages
                (inbox_id, wamid, from_wa_id, from_user_id, phone_number_id, type, text,
                 sent_at, raw)
            SELECT m.inbox_id, m.wamid, m.from_wa_id, m.from_user_id, m.phone_number_id,
                   m.type, m.text, m.sent_at, m.raw
            FROM json_to_recordset(CAST(:rows AS json)) AS m(
                inbox_id bigint, wamid text, from_wa_id text, from_user_id text,
                phone_number_id text, type text, text text, sent_at timestamptz, raw jsonb)
            ON CONFLICT (wamid) DO NOTHING
            RETURNING from_wa_id, from_user_id, text
            """
        ),
        {
            "rows": rows_json(
                {
                    "inbox_id": r.inbox_id,
                    "wamid": r.wamid,
                    "from_wa_id": r.from_wa_id,
                    "from_user_id": r.from_user_id,
                    "phone_number_id": r.phone_number_id,
                    "type": r.type,
                    "text": r.text,
                    "sent_at": r.sent_at,
                    "raw": r.raw,
                }
                for r in rows
            )
        },
    )
    return [(r.from_wa_id, r.from_user_id, r.text) for r in inserted]


# --------------------------------------------------------------------------- operators
