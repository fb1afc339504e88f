"""SQL of dispatch: claim a batch, record its outcomes, what is due or pending, expired leases,
scheduled starts (the admin commands' cancel and remove are in ``storage.admin``).

Every state write is one set-based statement whose ``WHERE state IN (...)`` guard comes from
the transition table (``contact_sources``), and appends its events in the same statement.
Functions take a Connection and never commit.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, RowMapping, text

from campaigns.domain.dispatch import ClaimedContact, ExpiredLease, RecordedOutcome, Starts
from campaigns.domain.profile_docs import PeopleValues, fill_parameters
from campaigns.domain.profiles import FieldDef
from campaigns.domain.states import (
    PENDING_CONTACT_STATES,
    CampaignStatus,
    ContactState,
    contact_sources,
    contact_transition,
)
from campaigns.storage.registry import reason_text, refusal_code
from campaigns.storage.sql import in_list, json_rows, micros, rows_doc

C = ContactState
# The campaign's opt-in rule, per contact (a start statement may hold several campaigns'
# groups: the ledger commits the groups of every chain of a process together).
_REQUIRES_OPT_IN = "(SELECT k.require_opt_in FROM campaigns k WHERE k.id = c.campaign_id)"


# Due contacts of one campaign, oldest due first, skipping rows another claim holds. The
# campaign must still be running at claim time; ix_contacts_due serves the inner query.
_CLAIM = f"""
WITH due AS (
    SELECT c.id, c.state
    FROM contacts c
    WHERE c.campaign_id = :campaign_id
      AND c.state IN ({in_list(contact_sources(C.IN_PROGRESS))})
      AND c.next_attempt_at <= now()
      AND EXISTS (SELECT 1 FROM campaigns k WHERE k.id = :campaign_id AND k.status = 'running')
    ORDER BY c.next_attempt_at, c.id
    LIMIT :limit
    FOR UPDATE OF c SKIP LOCKED
), claimed AS (
    UPDATE contacts c
    SET state = 'in_progress', attempt_id = gen_random_uuid(), attempts = c.attempts + 1,
        lease_expires_at = now() + make_interval(secs => :lease_s),
        in_progress_at = now(), send_started_at = NULL, message_status = NULL,
        updated_at = now()
    FROM due
    WHERE c.id = due.id
    RETURNING c.id, due.state AS from_state, c.phone_e164, c.variables, c.attempts, c.attempt_id,
              c.person_id
), events AS (
    INSERT INTO contact_events (contact_id, campaign_id, from_state, to_state, source, detail)
    SELECT id, :campaign_id, from_state, 'in_progress', 'dispatch', 'attempt ' || attempt_id
    FROM claimed
)
SELECT {{profile}} FROM claimed cl {{joins}} ORDER BY cl.id
"""
_PLAIN = _CLAIM.replace("{profile}", "cl.*").replace("{joins}", "")


def _with_profiles(count: int) -> str:
    """The claim that also reads the profile values a campaign's template names (its
    template variables that are profile fields): one join per batch, only their keys."""
    keys = ", ".join(f"CAST(:f{i} AS text), pr.fields -> CAST(:f{i} AS text)" for i in range(count))
    return _CLAIM.replace(
        "{profile}",
        f"cl.*, jsonb_build_object({keys}) AS profile, p.opted_in, p.opted_in_at, "
        "p.whatsapp_profile_name, p.wa_id AS person_wa_id",
    ).replace(
        "{joins}",
        "LEFT JOIN people p ON p.id = cl.person_id "
        "LEFT JOIN profiles pr ON pr.person_id = cl.person_id",
    )


def claim_due(
    conn: Connection,
    campaign_id: int,
    *,
    limit: int,
    lease_s: float,
    profile: Sequence[FieldDef] = (),
) -> list[ClaimedContact]:
    """Claims up to ``limit`` due contacts. ``profile``: template variables that are profile
    fields; a contact whose upload has no (or a blank) value gets its profile's."""
    params: dict[str, Any] = {"campaign_id": campaign_id, "limit": limit, "lease_s": lease_s}
    params |= {f"f{i}": f.name for i, f in enumerate(profile)}
    statement = _with_profiles(len(profile)) if profile else _PLAIN
    rows = conn.execute(text(statement), params)
    # Rows, not mappings: this runs for every message (a RowMapping per row cost ~10 us).
    return [
        ClaimedContact(
            id=r.id,
            from_state=ContactState(r.from_state),
            phone_e164=r.phone_e164,
            variables=_variables(r._mapping, profile) if profile else dict(r.variables or {}),
            attempt_no=r.attempts,
            attempt_id=r.attempt_id,
        )
        for r in rows
    ]


def _variables(row: RowMapping, profile: Sequence[FieldDef]) -> dict[str, str]:
    variables = dict(row["variables"] or {})
    people = PeopleValues(
        opted_in=bool(row["opted_in"]),
        opted_in_at=row["opted_in_at"],
        whatsapp_profile_name=row["whatsapp_profile_name"],
        whatsapp_id=row["person_wa_id"],
    )
    return fill_parameters(variables, profile, row["profile"], people)


# The send ledger's start statement: one per gate group, committed synchronously before any
# of the group's requests leave. It marks the attempts that may go and returns them.
# Guards: the attempt is still this claim's (in progress, same attempt id), its lease has not
# run out (lease recovery takes only expired leases), and the campaign is still running (a
# pause committed before this statement stops the group; the Redis flag is only a fast
# pre-check). Row locks make this and recovery's release mutually exclusive: whichever comes
# second re-checks its WHERE on the row the first one wrote (READ COMMITTED), so a contact is
# either started here or released there, never both.
#
# The contact registry's send-time check is the same statement: a contact whose person is
# refused now (unavailable, blocked, opted out; no opt-in while its campaign requires one)
# moves to Sending failed with the reason code instead of being started. So a STOP committed
# before a group's statement stops its contact, and the check costs no round trip of its own.
_START = f"""
WITH g AS (
    SELECT * FROM {json_rows("%(attempts)s", ("id bigint", "attempt_id uuid"))} AS g
), verdict AS MATERIALIZED (
    SELECT g.id, g.attempt_id, {refusal_code(_REQUIRES_OPT_IN)} AS code
    FROM g JOIN contacts c ON c.id = g.id LEFT JOIN people p ON p.id = c.person_id
), moved AS (
    UPDATE contacts c SET
        send_started_at = CASE WHEN v.code IS NULL THEN now() ELSE c.send_started_at END,
        state = CASE WHEN v.code IS NULL THEN c.state ELSE '{C.SENDING_FAILED.value}' END,
        reason_code = coalesce(v.code, c.reason_code),
        reason = CASE WHEN v.code IS NULL THEN c.reason ELSE {reason_text("v.code")} END,
        attempts = CASE WHEN v.code IS NULL THEN c.attempts ELSE c.attempts - 1 END,
        lease_expires_at = CASE WHEN v.code IS NULL THEN c.lease_expires_at END,
        finished_at = CASE WHEN v.code IS NULL THEN c.finished_at ELSE now() END,
        updated_at = CASE WHEN v.code IS NULL THEN c.updated_at ELSE now() END
    FROM verdict v
    -- The attempt and state guards are written so that no partial index can serve them
    -- (IS NOT DISTINCT FROM, state || ''): the planner, whose statistics predate the
    -- campaign's claims, takes uq_contacts_attempt_id or the lease index (state =
    -- 'in_progress') for nearly empty, scans it whole and hash-joins the group: a cost that
    -- grows with every claim (50-70 ms per statement at 1,000 msg/s, pg_stat_statements).
    -- This way each row is one primary-key probe.
    WHERE c.id = v.id AND c.attempt_id IS NOT DISTINCT FROM v.attempt_id
      AND (c.state || '') = 'in_progress'
      AND (v.code IS NOT NULL OR (
          c.lease_expires_at > now()
          -- A scalar subquery, not EXISTS: EXISTS would be flattened into a join that walks
          -- every in-progress contact of every running campaign for each statement.
          AND (SELECT k.status FROM campaigns k WHERE k.id = c.campaign_id) = 'running'))
    RETURNING c.id, c.campaign_id, v.code
), events AS (
    INSERT INTO contact_events (contact_id, campaign_id, from_state, to_state, source, detail)
    SELECT id, campaign_id, 'in_progress', '{C.SENDING_FAILED.value}', 'registry',
           'refused at send: ' || code
    FROM moved WHERE code IS NOT NULL
)
SELECT id, code FROM moved
"""


def _start_params(attempts: Sequence[tuple[int, uuid.UUID]]) -> dict[str, Any]:
    ordered = sorted(attempts)  # lock order: no deadlocks with a record or recovery
    return {"attempts": rows_doc([(i, a.hex) for i, a in ordered])}


def _starts(rows: Iterable[Sequence[Any]]) -> Starts:
    started: set[int] = set()
    refused: dict[int, str] = {}
    for contact_id, code in rows:
        if code is None:
            started.add(int(contact_id))
        else:
            refused[int(contact_id)] = str(code)
    return Starts(frozenset(started), refused)


async def start_attempts(
    conn: psycopg.AsyncConnection[Any], attempts: Sequence[tuple[int, uuid.UUID]]
) -> Starts:
    """Starts (contact id, attempt id) pairs, or refuses them for the registry (``Starts``),
    in the caller's transaction on ``conn``: :class:`StartStatements` commits it at once,
    synchronously."""
    cursor = await conn.execute(_START, _start_params(attempts))
    return _starts(await cursor.fetchall())


class StartStatements:
    """The start statement on its own asyncio connection (psycopg, in the caller's event
    loop: no thread, no pool), ``synchronous_commit`` on for the session. One statement at a
    time; a failed one drops the connection (the next one reconnects)."""

    def __init__(self, engine: Engine) -> None:
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def start(self, attempts: Sequence[tuple[int, uuid.UUID]]) -> Starts:
        """:func:`start_attempts`, committed; raises if it could not tell (nothing may go)."""
        if not attempts:
            return Starts()
        conn = await self._connect()
        try:
            async with conn.transaction():
                return await start_attempts(conn, attempts)
        except BaseException:
            await self.close()
            raise

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            await conn.execute("SET synchronous_commit = on")
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):
                await conn.close()


# The outcomes' columns, in the order ``record_outcomes`` writes each row's values.
_OUTCOME_COLUMNS = (
    "id bigint",
    "attempt_id uuid",
    "state text",
    "reason text",
    "wamid text",
    "wa_id text",
    "code integer",
    "detail text",
    "retry_after float8",
    "at micros",
    "released boolean",
    "not_before micros",
    "message_status text",
)
# One statement per batch. Rows still in progress under this attempt move; a row a status
# webhook already moved on (it beat this commit) only gets the wamid/wa_id it lacks.
_RECORD = f"""
WITH o AS (
    SELECT * FROM {json_rows(":outcomes", _OUTCOME_COLUMNS)} AS o
), moved AS (
    UPDATE contacts c SET
        state = coalesce(o.state, c.state),
        reason = CASE WHEN o.state IS NULL OR o.released THEN c.reason ELSE o.reason END,
        wamid = coalesce(o.wamid, c.wamid),
        wa_id = coalesce(o.wa_id, c.wa_id),
        message_status = coalesce(o.message_status, c.message_status),
        -- Released unsent: the attempt never happened, so it has no start mark either.
        send_started_at = CASE WHEN o.released THEN NULL ELSE c.send_started_at END,
        error_code = CASE WHEN o.released THEN c.error_code ELSE coalesce(o.code, c.error_code) END,
        error_detail = CASE WHEN o.released THEN c.error_detail
                            ELSE coalesce(o.detail, c.error_detail) END,
        attempts = CASE WHEN o.released THEN c.attempts - 1 ELSE c.attempts END,
        next_attempt_at = CASE
            WHEN o.released AND o.not_before IS NOT NULL THEN o.not_before
            WHEN o.state = 'retry_scheduled' AND NOT o.released
                THEN now() + make_interval(secs => o.retry_after)
            ELSE c.next_attempt_at END,
        -- Unknown outcome: the lease ends now and the recovery grace starts counting.
        lease_expires_at = CASE WHEN o.state IS NULL THEN now() ELSE NULL END,
        sent_at = CASE WHEN o.state = 'sent' THEN coalesce(c.sent_at, o.at, now())
                       ELSE c.sent_at END,
        finished_at = CASE WHEN o.state IN ({in_list({C.SENDING_FAILED, C.ERROR})})
                           THEN now() ELSE c.finished_at END,
        updated_at = now()
    FROM o
    -- As in the start statement: one primary-key probe per row, never a partial index.
    WHERE c.id = o.id AND c.attempt_id IS NOT DISTINCT FROM o.attempt_id
      AND (c.state || '') = 'in_progress'
    RETURNING c.id, c.campaign_id, o.state AS to_state, o.reason, o.released
), late AS (
    UPDATE contacts c SET
        wamid = o.wamid, wa_id = coalesce(c.wa_id, o.wa_id),
        message_status = coalesce(c.message_status, o.message_status),
        sent_at = coalesce(c.sent_at, o.at), updated_at = now()
    FROM o
    WHERE c.id = o.id AND c.attempt_id IS NOT DISTINCT FROM o.attempt_id
      AND (c.state || '') <> 'in_progress' AND c.wamid IS NULL AND o.wamid IS NOT NULL
    RETURNING c.id
), events AS (
    INSERT INTO contact_events (contact_id, campaign_id, from_state, to_state, source, detail)
    SELECT id, campaign_id, 'in_progress', to_state, 'dispatch',
           CASE WHEN released THEN coalesce('released unsent: ' || reason, 'released unsent')
                ELSE reason END
    FROM moved WHERE to_state IS NOT NULL
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM late) AS late
"""
_RECORD_STATEMENT = text(_RECORD)  # built once: text() parses its binds on every call


def record_outcomes(conn: Connection, outcomes: Sequence[RecordedOutcome]) -> tuple[int, int]:
    """Writes a batch's outcomes in one statement; returns (rows moved, late wamid fills)."""
    for outcome in outcomes:
        if outcome.state is not None:
            contact_transition(C.IN_PROGRESS, outcome.state)  # refuses what the table refuses
    ordered = sorted(outcomes, key=lambda o: o.contact_id)  # lock order: no deadlocks
    doc = rows_doc(
        [
            (
                o.contact_id,
                o.attempt_id.hex,
                o.state,
                o.reason,
                o.wamid,
                o.wa_id,
                o.error_code,
                o.error_detail,
                o.retry_after_s or 0.0,
                micros(o.at),
                o.released,
                micros(o.not_before),
                o.message_status,
            )
            for o in ordered
        ]
    )
    row = conn.execute(_RECORD_STATEMENT, {"outcomes": doc}).one()
    return int(row.moved), int(row.late)


def has_pending(conn: Connection, campaign_id: int) -> bool:
    """Whether the campaign still has a contact Initial, In progress or Retry scheduled.
    ORDER BY on the index's columns keeps it one probe of ix_contacts_campaign_state (with
    EXISTS the planner may scan the table when it expects many matches)."""
    query = text(
        f"SELECT 1 FROM contacts WHERE campaign_id = :cid "
        f"AND state IN ({in_list(PENDING_CONTACT_STATES)}) ORDER BY campaign_id, state LIMIT 1"
    )
    return conn.execute(query, {"cid": campaign_id}).first() is not None


def campaign_states(
    conn: Connection, campaign_ids: Sequence[int]
) -> dict[int, tuple[CampaignStatus, str | None]]:
    """Status and status_reason of these campaigns, one statement (no lock)."""
    rows = conn.execute(
        text("SELECT id, status, status_reason FROM campaigns WHERE id = ANY(:ids)"),
        {"ids": list(campaign_ids)},
    )
    return {int(r[0]): (CampaignStatus(r[1]), r[2]) for r in rows}


def campaigns_with_pending(conn: Connection, campaign_ids: Sequence[int]) -> set[int]:
    """Which of these campaigns still have a contact Initial, In progress or Retry scheduled:
    one index probe per campaign."""
    # LATERAL ... ORDER BY ... LIMIT 1 keeps it one index probe per campaign (an EXISTS may
    # be flattened into, or planned as, a scan of many contacts).
    rows = conn.execute(
        text(
            f"SELECT k.id FROM unnest(CAST(:ids AS bigint[])) AS k(id) CROSS JOIN LATERAL ("
            f"SELECT 1 FROM contacts c WHERE c.campaign_id = k.id "
            f"AND c.state IN ({in_list(PENDING_CONTACT_STATES)}) "
            f"ORDER BY c.campaign_id, c.state LIMIT 1) AS p"
        ),
        {"ids": list(campaign_ids)},
    )
    return {int(r[0]) for r in rows}


def next_due_in_s(conn: Connection, campaign_id: int) -> float | None:
    """Seconds until the next due contact (0 when some are due now), None when none waits."""
    query = text(
        f"SELECT greatest(0, extract(epoch FROM min(next_attempt_at) - now())) FROM contacts "
        f"WHERE campaign_id = :cid AND state IN ({in_list(contact_sources(C.IN_PROGRESS))})"
    )
    value = conn.execute(query, {"cid": campaign_id}).scalar_one()
    return None if value is None else float(value)


# --------------------------------------------------------------------------- leases


def expired_leases(conn: Connection, *, limit: int = 1000) -> list[ExpiredLease]:
    rows = conn.execute(
        text(
            "SELECT id, campaign_id, attempt_id, attempts, lease_expires_at,"
            " send_started_at IS NOT NULL AS started FROM contacts "
            "WHERE state = 'in_progress' AND lease_expires_at < now() "
            "ORDER BY lease_expires_at LIMIT :limit"
        ),
        {"limit": limit},
    ).mappings()
    return [
        ExpiredLease(
            id=int(r["id"]),
            campaign_id=int(r["campaign_id"]),
            attempt_id=r["attempt_id"],
            attempts=int(r["attempts"]),
            lease_expires_at=r["lease_expires_at"],
            started=bool(r["started"]),
        )
        for r in rows
    ]


_SETTLE_LEASES = """
WITH o AS (
    SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:attempt_ids AS uuid[]),
                         CAST(:states AS text[]), CAST(:reasons AS text[]))
        AS o(id, attempt_id, state, reason)
), moved AS (
    UPDATE contacts c SET
        state = o.state, reason = o.reason, lease_expires_at = NULL, updated_at = now(),
        attempts = CASE WHEN o.state = 'error' THEN c.attempts ELSE c.attempts - 1 END,
        finished_at = CASE WHEN o.state = 'error' THEN now() ELSE c.finished_at END
    FROM o
    WHERE c.id = o.id AND c.attempt_id = o.attempt_id AND c.state = 'in_progress'
      AND c.lease_expires_at < now()
      -- A release needs the ledger to say "never started" on the row as it is now: after
      -- waiting for a start statement's lock, this re-check sees its mark and lets it be.
      AND (o.state = 'error' OR c.send_started_at IS NULL)
    RETURNING c.id, c.campaign_id, o.state, o.reason
), events AS (
    INSERT INTO contact_events (contact_id, campaign_id, from_state, to_state, source, detail)
    SELECT id, campaign_id, 'in_progress', state, 'recovery', reason FROM moved
)
SELECT count(*) FROM moved
"""


def settle_leases(
    conn: Connection, settled: Sequence[tuple[ExpiredLease, ContactState, str]]
) -> int:
    """Expired leases -> released (never started) or Error (outcome unknown), one statement;
    a release that lost the race to a start statement does not happen (guarded in SQL)."""
    for _, state, _ in settled:
        contact_transition(C.IN_PROGRESS, state)
    ordered = sorted(settled, key=lambda s: s[0].id)
    result = conn.execute(
        text(_SETTLE_LEASES),
        {
            "ids": [lease.id for lease, _, _ in ordered],
            "attempt_ids": [lease.attempt_id for lease, _, _ in ordered],
            "states": [state.value for _, state, _ in ordered],
            "reasons": [reason for _, _, reason in ordered],
        },
    )
    return int(result.scalar_one())


# --------------------------------------------------------------------------- admin


def campaign_ids_by_status(conn: Connection, statuses: Iterable[str]) -> list[int]:
    rows = conn.execute(
        text("SELECT id FROM campaigns WHERE status = ANY(CAST(:s AS text[])) ORDER BY id"),
        {"s": list(statuses)},
    )
    return [int(r[0]) for r in rows]


def due_scheduled_campaigns(conn: Connection) -> list[int]:
    rows = conn.execute(
        text(
            "SELECT id FROM campaigns WHERE status = 'scheduled' AND scheduled_at <= now() "
            "ORDER BY scheduled_at FOR UPDATE SKIP LOCKED"
        )
    )
    return [int(r[0]) for r in rows]


def running_with_due_work(conn: Connection) -> list[tuple[int, str | None, float]]:
    """(id, sender number id or None for the default, configured rate) of every running
    campaign with a contact due now: one statement over ix_contacts_due."""
    rows = conn.execute(
        text(
            f"SELECT k.id, k.phone_number_id, k.rate_per_s FROM campaigns k "
            f"WHERE k.status = 'running' AND EXISTS (SELECT 1 FROM contacts c "
            f"WHERE c.campaign_id = k.id "
            f"AND c.state IN ({in_list(contact_sources(C.IN_PROGRESS))}) "
            f"AND c.next_attempt_at <= now()) ORDER BY k.id"
        )
    )
    return [(int(r[0]), r[1], float(r[2])) for r in rows]
