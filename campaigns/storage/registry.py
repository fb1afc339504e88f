"""The contact registry's SQL (``people``): every writer goes through :func:`apply`, whose
statement is :func:`campaigns.domain.registry.learn` in SQL (the integration tests check the
two agree for every change); reads for the API, uploads, dispatch and the contacts check.

People known only by a business-scoped user id (an opt-out from a user with a username and
no phone yet) are rows with ``user_id`` set and no phone, written by the ``*_users``
functions; :mod:`campaigns.services.webhooks.people` carries their opt-out to the phone once
the ``user_ids`` map knows it. Functions take a Connection and never commit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, text

from campaigns.domain.registry import (
    CREATING,
    SOURCE_PREFERENCES,
    SUPPRESSION_REASONS,
    Change,
    Learned,
    Person,
    Suppression,
    is_e164,
    person_id,
)
from campaigns.storage.sql import json_rows, micros, rows_doc

# --------------------------------------------------------------------------- apply

_CREATING = ", ".join(f"'{c.value}'" for c in sorted(CREATING))
_PREF = f"'{SOURCE_PREFERENCES}'"
# An opt-out is (re)written unless one stands that only a user_preferences stop could lift
# and this one is also from user_preferences (domain.registry._opted_out).
_OPT_OUT_WINS = (
    f"i.change = 'opted_out' AND (NOT p.opted_out OR "
    f"(p.opt_out_source = {_PREF} AND i.source <> {_PREF}))"
)
_RESUME = f"i.change = 'resumed' AND p.opted_out AND p.opt_out_source = {_PREF}"
_LIFTS_OPT_OUT = f"i.change = 'opted_in' OR ({_RESUME})"
_UPLOAD_OPT_IN = "i.change = 'upload_opt_in' AND NOT p.opted_out"
_REMOVED = "i.change = 'removed'"
_WITHDRAWN = "i.change = 'opt_in_withdrawn'"

# Each column after one change, as domain.registry.learn has it (p: the row, i: the change).
_SET: Mapping[str, str] = {
    "unavailable_since": f"""CASE WHEN {_REMOVED} THEN NULL
        WHEN i.change = 'unavailable' THEN coalesce(p.unavailable_since, i.at)
        ELSE p.unavailable_since END""",
    "unavailable_code": f"""CASE WHEN {_REMOVED} THEN NULL
        WHEN i.change = 'unavailable' AND p.unavailable_since IS NULL THEN i.code
        ELSE p.unavailable_code END""",
    "blocked_at": f"""CASE WHEN {_REMOVED} OR i.change = 'unblocked' THEN NULL
        WHEN i.change = 'blocked' THEN coalesce(p.blocked_at, i.at) ELSE p.blocked_at END""",
    "blocked_reason": f"""CASE WHEN {_REMOVED} OR i.change = 'unblocked' THEN NULL
        WHEN i.change = 'blocked' THEN i.reason ELSE p.blocked_reason END""",
    "opted_in": f"""CASE WHEN {_REMOVED} OR {_WITHDRAWN} THEN false
        WHEN i.change = 'opted_in' THEN true
        WHEN {_UPLOAD_OPT_IN} THEN i.value ELSE p.opted_in END""",
    "opted_in_at": f"""CASE WHEN {_REMOVED} OR {_WITHDRAWN} THEN NULL
        WHEN i.change = 'opted_in' OR ({_UPLOAD_OPT_IN}) THEN i.at ELSE p.opted_in_at END""",
    "opt_in_source": f"""CASE WHEN {_REMOVED} OR {_WITHDRAWN} THEN NULL
        WHEN i.change = 'opted_in' OR ({_UPLOAD_OPT_IN}) THEN i.source
        ELSE p.opt_in_source END""",
    "opted_out": f"""CASE WHEN {_OPT_OUT_WINS} THEN true WHEN {_LIFTS_OPT_OUT} THEN false
        ELSE p.opted_out END""",
    "opted_out_at": f"""CASE WHEN {_OPT_OUT_WINS} THEN i.at WHEN {_LIFTS_OPT_OUT} THEN NULL
        ELSE p.opted_out_at END""",
    "opt_out_source": f"""CASE WHEN {_OPT_OUT_WINS} THEN i.source
        WHEN {_LIFTS_OPT_OUT} THEN NULL ELSE p.opt_out_source END""",
    "wa_id": f"""CASE WHEN {_REMOVED} THEN NULL
        WHEN i.change IN ('sent', 'checked') THEN coalesce(i.wa_id, p.wa_id) ELSE p.wa_id END""",
    "check_status": f"""CASE WHEN {_REMOVED} THEN NULL
        WHEN i.change = 'checked' THEN i.check_status ELSE p.check_status END""",
    "checked_at": f"""CASE WHEN {_REMOVED} THEN NULL
        WHEN i.change = 'checked' THEN i.at ELSE p.checked_at END""",
    "last_sent_at": f"""CASE WHEN {_REMOVED} THEN NULL
        WHEN i.change = 'sent' THEN greatest(p.last_sent_at, i.at) ELSE p.last_sent_at END""",
    "first_seen_at": f"""CASE WHEN i.change IN ({_CREATING}) AND p.removed_at IS NOT NULL
        THEN i.at ELSE p.first_seen_at END""",
    "removed_at": f"""CASE WHEN {_REMOVED} THEN coalesce(p.removed_at, i.at)
        WHEN i.change IN ({_CREATING}) THEN NULL ELSE p.removed_at END""",
}
# A new person: the same expressions over an empty record ``e`` instead of the row ``p``.
_ROW = re.compile(r"\bp\.")
_EMPTY = (
    "SELECT NULL::timestamptz AS unavailable_since, NULL::int AS unavailable_code, "
    "NULL::timestamptz AS blocked_at, NULL::text AS blocked_reason, false AS opted_in, "
    "NULL::timestamptz AS opted_in_at, NULL::text AS opt_in_source, false AS opted_out, "
    "NULL::timestamptz AS opted_out_at, NULL::text AS opt_out_source, NULL::text AS wa_id, "
    "NULL::text AS check_status, NULL::timestamptz AS checked_at, "
    "NULL::timestamptz AS last_sent_at, i.at AS first_seen_at, NULL::timestamptz AS removed_at"
)
_INPUT = """
    SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS i(
        id bigint, phone text, change text, at timestamptz, source text, code int,
        reason text, value boolean, wa_id text, check_status text)
"""
# Rows are locked in id order before they change (no deadlock with another writer); a
# non-creating change only acts on a visible record; the insert takes the rest.
_APPLY = f"""
WITH i AS ({_INPUT}),
locked AS (
    SELECT p.id FROM people p JOIN i ON i.id = p.id
    WHERE i.change IN ({_CREATING}) OR p.removed_at IS NULL OR p.opted_out
    ORDER BY p.id FOR UPDATE OF p
), changed AS (
    UPDATE people p SET {", ".join(f"{col} = {expr}" for col, expr in _SET.items())}
    FROM i WHERE p.id = i.id AND p.id IN (SELECT id FROM locked)
      AND ({", ".join(_SET.values())}) IS DISTINCT FROM ({", ".join(f"p.{c}" for c in _SET)})
    RETURNING p.id
), added AS (
    INSERT INTO people (id, phone_e164, {", ".join(_SET)})
    SELECT i.id, i.phone, {", ".join(_ROW.sub("e.", expr) for expr in _SET.values())}
    FROM i CROSS JOIN LATERAL ({_EMPTY}) e
    WHERE i.change IN ({_CREATING}) AND NOT EXISTS (SELECT 1 FROM people x WHERE x.id = i.id)
    ORDER BY i.id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT 'found' AS kind, id FROM locked
UNION ALL SELECT 'changed', id FROM changed
UNION ALL SELECT 'added', id FROM added
"""


def _row(phone: str, fact: Learned) -> dict[str, Any]:
    return {
        "id": person_id(phone),
        "phone": phone,
        "change": fact.change.value,
        "at": fact.at.isoformat(),
        "source": fact.source,
        "code": fact.code,
        "reason": fact.reason,
        "value": fact.value,
        "wa_id": fact.wa_id,
        "check_status": fact.check_status,
    }


@dataclass
class Applied:
    """What :func:`apply` did: the numbers whose record it found (or made), and those whose
    record it actually changed (or made)."""

    found: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)


def apply(conn: Connection, facts: Sequence[tuple[str, Learned]]) -> Applied:
    """Applies ``(E.164, change)`` pairs, each as ``domain.registry.learn`` says. A resume,
    unblock or remove finds no unknown or removed person (see ``Person.visible``); the
    other changes make the record of an unknown number. Changes of one number apply in
    their order (one statement per round, normally one)."""
    done = Applied()
    facts = [(phone, fact) for phone, fact in facts if is_e164(phone)]  # no key, no record
    for round_ in _rounds(facts):
        pending = {r["id"]: r for r in (_row(phone, fact) for phone, fact in round_)}
        for _ in range(3):  # a number another transaction inserted meanwhile: once more
            result = conn.execute(text(_APPLY), {"rows": json.dumps(list(pending.values()))})
            hit: set[int] = set()
            for kind, pid in result:
                phone = pending[int(pid)]["phone"]
                hit.add(int(pid))
                done.found.add(phone)
                if kind != "found":
                    done.changed.add(phone)
            pending = {
                i: r for i, r in pending.items() if i not in hit and Change(r["change"]) in CREATING
            }
            if not pending:
                break
    return done


# Accepted sends of people on record: ``learn``'s SENT for a visible person (last_sent_at,
# wa_id), without the general statement's locking pass and CASE per column. It runs for
# every accepted send, so it is the cheap one; rows in id order (lock order).
_SENT = f"""
UPDATE people p SET last_sent_at = greatest(p.last_sent_at, s.at),
                    wa_id = coalesce(s.wa_id, p.wa_id)
FROM {json_rows("%(sends)s", ("id bigint", "at micros", "wa_id text"))} AS s
WHERE p.id = s.id AND p.removed_at IS NULL
RETURNING p.id
"""


def apply_sends(conn: Connection, facts: Sequence[tuple[str, Learned]]) -> None:
    """Applies a flush's learned facts as :func:`apply` does, the accepted sends of people
    on record through the cheap statement above; the rest (other changes, and sends to an
    unknown or removed number, which make its record again) through :func:`apply`, in order.
    A send's change commutes with the others dispatch learns (they touch other columns)."""
    latest: dict[str, tuple[datetime, str | None]] = {}
    for phone, fact in facts:
        if fact.change is Change.SENT and is_e164(phone):
            at, wa_id = latest.get(phone, (fact.at, None))
            latest[phone] = (max(at, fact.at), fact.wa_id or wa_id)
    found: set[str] = set()
    if latest:
        # In person id order (lock order); one person per number, so ids never tie.
        ordered = sorted(
            (person_id(phone), phone, at, wa_id) for phone, (at, wa_id) in latest.items()
        )
        sends = rows_doc([(pid, micros(at), wa_id) for pid, _, at, wa_id in ordered])
        ids = {int(r[0]) for r in conn.exec_driver_sql(_SENT, {"sends": sends})}
        found = {phone for pid, phone, _, _ in ordered if pid in ids}
    rest = [(p, f) for p, f in facts if not (f.change is Change.SENT and p in found)]
    if rest:
        apply(conn, rest)


def _rounds(facts: Sequence[tuple[str, Learned]]) -> list[list[tuple[str, Learned]]]:
    """One statement may change a row once: the k-th change of each number goes in round k."""
    rounds: list[list[tuple[str, Learned]]] = []
    seen: dict[str, int] = {}
    for phone, fact in facts:
        k = seen.get(phone, 0)
        seen[phone] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append((phone, fact))
    return rounds


# --------------------------------------------------------------------------- people by user id


def opt_out_users(conn: Connection, user_ids: Iterable[str], *, source: str, at: datetime) -> int:
    """Opt-outs known only by a user id; returns how many records it made or changed."""
    ids = sorted(set(user_ids))
    if not ids:
        return 0
    result = conn.execute(
        text(
            f"""
            INSERT INTO people (id, user_id, opted_out, opted_out_at, opt_out_source,
                                first_seen_at)
            SELECT -nextval('people_user_seq'), u, true, :at, :source, :at
            FROM unnest(CAST(:ids AS text[])) AS u ORDER BY u
            ON CONFLICT (user_id) WHERE user_id IS NOT NULL DO UPDATE SET
                opted_out = true, opted_out_at = :at, opt_out_source = :source
            WHERE NOT people.opted_out OR (people.opt_out_source = {_PREF} AND :source <> {_PREF})
            """
        ),
        {"ids": ids, "source": source, "at": at},
    )
    return int(result.rowcount)


def resume_users(conn: Connection, user_ids: Iterable[str]) -> int:
    """Lifts the user_preferences opt-outs kept against these user ids."""
    ids = sorted(set(user_ids))
    if not ids:
        return 0
    result = conn.execute(
        text(
            f"""
            UPDATE people SET opted_out = false, opted_out_at = NULL, opt_out_source = NULL
            WHERE user_id = ANY(CAST(:ids AS text[])) AND phone_e164 IS NULL
              AND opted_out AND opt_out_source = {_PREF}
            """
        ),
        {"ids": ids},
    )
    return int(result.rowcount)


def user_opt_outs(conn: Connection, user_ids: Iterable[str]) -> list[tuple[str, str, datetime]]:
    """(user id, source, time) of the opt-outs kept against these user ids."""
    ids = sorted(set(user_ids))
    if not ids:
        return []
    rows = conn.execute(
        text(
            "SELECT user_id, opt_out_source, opted_out_at FROM people "
            "WHERE user_id = ANY(CAST(:ids AS text[])) AND phone_e164 IS NULL AND opted_out"
        ),
        {"ids": ids},
    )
    return [(str(r.user_id), str(r.opt_out_source), r.opted_out_at) for r in rows]


# --------------------------------------------------------------------------- the user-id map


def record_user_ids(conn: Connection, phones_by_user: Mapping[str, str]) -> list[str]:
    """Keeps user id -> E.164 pairs; returns the user ids whose mapping is new or changed."""
    if not phones_by_user:
        return []
    rows = [{"u": u, "p": p} for u, p in sorted(phones_by_user.items())]
    result = conn.execute(
        text(
            """
            INSERT INTO user_ids (user_id, phone_e164)
            SELECT v.u, v.p FROM json_to_recordset(CAST(:rows AS json)) AS v(u text, p text)
            ON CONFLICT (user_id) DO UPDATE
                SET phone_e164 = EXCLUDED.phone_e164, seen_at = now()
                WHERE user_ids.phone_e164 IS DISTINCT FROM EXCLUDED.phone_e164
            RETURNING user_id
            """
        ),
        {"rows": json.dumps(rows)},
    )
    return [str(r) for r in result.scalars()]


def phones_of_users(conn: Connection, user_ids: Iterable[str]) -> dict[str, str]:
    """The known phone (E.164) of each of these user ids."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = conn.execute(
        text("SELECT user_id, phone_e164 FROM user_ids WHERE user_id = ANY(CAST(:ids AS text[]))"),
        {"ids": ids},
    )
    return {str(r.user_id): str(r.phone_e164) for r in rows}


def users_of_phones(conn: Connection, phones: Iterable[str]) -> list[str]:
    """The user ids mapped to any of these phones (E.164)."""
    numbers = sorted(set(phones))
    if not numbers:
        return []
    rows = conn.execute(
        text("SELECT user_id FROM user_ids WHERE phone_e164 = ANY(CAST(:p AS text[]))"),
        {"p": numbers},
    )
    return [str(r) for r in rows.scalars()]


# --------------------------------------------------------------------------- reads

_PERSON_FIELDS = tuple(f.name for f in fields(Person))


def person_of(row: RowMapping) -> Person:
    return Person(**{name: row[name] for name in _PERSON_FIELDS})


def find_person(conn: Connection, numbers: Sequence[str], wa_id: str | None) -> RowMapping | None:
    """The record of the first of these E.164 numbers that has one, else the one whose
    ``wa_id`` is ``wa_id``; removed records included (the caller decides what shows)."""
    ids = [person_id(n) for n in numbers]
    rows = conn.execute(
        text(
            """
            SELECT *, array_position(CAST(:ids AS bigint[]), id) AS rank FROM people
            WHERE id = ANY(CAST(:ids AS bigint[])) OR (wa_id = :wa_id AND :wa_id IS NOT NULL)
            ORDER BY rank NULLS LAST, id LIMIT 1
            """
        ),
        {"ids": ids, "wa_id": wa_id},
    ).mappings()
    return next(iter(rows), None)


@dataclass
class Known:
    """People read for a bulk call: by their number and by their wa_id."""

    by_phone: dict[str, RowMapping] = field(default_factory=dict)
    by_wa_id: dict[str, RowMapping] = field(default_factory=dict)


def find_people(conn: Connection, numbers: Sequence[str], wa_ids: Sequence[str]) -> Known:
    """Every person with one of these numbers or wa_ids (one query for a bulk call)."""
    known = Known()
    if not numbers and not wa_ids:
        return known
    rows = conn.execute(
        text(
            "SELECT * FROM people WHERE phone_e164 IS NOT NULL AND "
            "(id = ANY(CAST(:ids AS bigint[])) OR wa_id = ANY(CAST(:wa_ids AS text[])))"
        ),
        {"ids": sorted({person_id(n) for n in numbers}), "wa_ids": sorted(set(wa_ids))},
    ).mappings()
    for row in rows:
        known.by_phone[str(row["phone_e164"])] = row
        if row["wa_id"] is not None:
            known.by_wa_id.setdefault(str(row["wa_id"]), row)
    return known


def people_by_phone(conn: Connection, phones: Iterable[str]) -> dict[str, Person]:
    numbers = sorted(set(phones))
    if not numbers:
        return {}
    rows = conn.execute(
        text("SELECT * FROM people WHERE id = ANY(CAST(:ids AS bigint[]))"),
        {"ids": [person_id(n) for n in numbers]},
    ).mappings()
    return {str(r["phone_e164"]): person_of(r) for r in rows}


def campaigns_of(conn: Connection, pid: int, *, limit: int = 200) -> list[RowMapping]:
    """The person's campaign contacts, newest first: campaign, state, reason."""
    return list(
        conn.execute(
            text(
                """
                SELECT c.campaign_id, k.name AS campaign_name, k.status AS campaign_status,
                       c.id AS contact_id, c.state, c.reason_code, c.reason, c.sent_at,
                       c.delivered_at, c.read_at, c.updated_at
                FROM contacts c JOIN campaigns k ON k.id = c.campaign_id
                WHERE c.person_id = :pid
                ORDER BY c.id DESC LIMIT :limit
                """
            ),
            {"pid": pid, "limit": limit},
        ).mappings()
    )


def delivered_since(conn: Connection, phones: Iterable[str], since: datetime) -> set[str]:
    """Numbers with a message delivered (or read) since ``since``."""
    numbers = sorted(set(phones))
    if not numbers:
        return set()
    rows = conn.execute(
        text(
            """
            SELECT DISTINCT c.phone_e164 FROM contacts c
            WHERE c.person_id = ANY(CAST(:ids AS bigint[]))
              AND coalesce(c.delivered_at, c.read_at) >= :since
            """
        ),
        {"ids": [person_id(n) for n in numbers], "since": since},
    )
    return {str(p) for p in rows.scalars()}


def suppressed_counts(conn: Connection, campaign_id: int) -> dict[str, int]:
    """The campaign's contacts the registry refused, per reason code: at upload (the
    uploads' counts per reason, no scan of the invalid rows) and at send time or by its
    contacts check (Sending failed rows, few)."""
    rows = conn.execute(
        text(
            """
            SELECT r.key, sum(r.value::bigint) FROM uploads u, jsonb_each_text(u.reasons) r
            WHERE u.campaign_id = :cid AND r.key = ANY(CAST(:codes AS text[]))
            GROUP BY r.key
            UNION ALL
            SELECT reason_code, count(*) FROM contacts
            WHERE campaign_id = :cid AND state = 'sending_failed'
              AND reason_code = ANY(CAST(:codes AS text[]))
            GROUP BY reason_code
            """
        ),
        {"cid": campaign_id, "codes": [s.value for s in Suppression]},
    )
    found: dict[str, int] = {}
    for code, n in rows:
        found[str(code)] = found.get(str(code), 0) + int(n)
    return {s.value: found.get(s.value, 0) for s in Suppression}


# --------------------------------------------------------------------------- send time


def reason_text(code: str) -> str:
    """The readable reason of a refusal code (an SQL text expression), as uploads word it."""
    cases = " ".join(f"WHEN '{c.value}' THEN '{t}'" for c, t in SUPPRESSION_REASONS.items())
    return f"CASE {code} {cases} END"


def refusal_code(require_opt_in: str) -> str:
    """The refusal rule of ``domain.registry.SUPPRESSION`` in SQL, over people ``p``: the
    reason code, NULL when the person may be messaged. ``require_opt_in``: an SQL boolean
    (a bind parameter, or ``k.require_opt_in`` of a joined campaign)."""
    return f"""CASE
    WHEN p.status = 'BLOCKED' THEN '{Suppression.BLOCKED.value}'
    WHEN p.status = 'UNAVAILABLE' THEN '{Suppression.UNAVAILABLE.value}'
    WHEN p.opted_out THEN '{Suppression.OPTED_OUT.value}'
    WHEN {require_opt_in} AND NOT p.opted_in THEN '{Suppression.NOT_OPTED_IN.value}'
END"""
