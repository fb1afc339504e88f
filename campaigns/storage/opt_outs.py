"""Opted-out numbers and the user-id-to-phone map they reach phones through.

Written by STOP replies, 131050 answers and status webhooks, and ``user_preferences``
webhooks; read by uploads. An opt-out known only by a business-scoped user id (a user with a
username who wrote no phone) is a row keyed ``user:<user id>``: uploads never match it (no
E.164 number starts with ``user:``), and once ``user_ids`` maps that id to a phone the same
opt-out is written for the phone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, text

USER_KEY_PREFIX = "user:"


def user_key(user_id: str) -> str:
    """The ``opt_outs`` key of an opt-out known only by a business-scoped user id."""
    return USER_KEY_PREFIX + user_id


def insert_opt_outs(conn: Connection, phones: Iterable[str], *, source: str) -> int:
    """Records E.164 numbers (or ``user:`` keys) as opted out; returns how many were new."""
    numbers = sorted(set(phones))
    if not numbers:
        return 0
    result = conn.execute(
        text(
            """
            INSERT INTO opt_outs (phone_e164, source)
            SELECT phone, :source FROM json_array_elements_text(CAST(:phones AS json)) AS phone
            ORDER BY phone
            ON CONFLICT (phone_e164) DO NOTHING
            """
        ),
        {"phones": json.dumps(numbers), "source": source},
    )
    return int(result.rowcount)


def remove_opt_outs(conn: Connection, keys: Iterable[str], *, source: str) -> int:
    """Lifts the opt-outs of these numbers / ``user:`` keys recorded with ``source`` only
    (an opt-out from another source, e.g. a STOP reply or an operator, stays)."""
    numbers = sorted(set(keys))
    if not numbers:
        return 0
    result = conn.execute(
        text(
            """
            DELETE FROM opt_outs
            WHERE phone_e164 = ANY(ARRAY(SELECT json_array_elements_text(CAST(:keys AS json))))
              AND source = :source
            """
        ),
        {"keys": json.dumps(numbers), "source": source},
    )
    return int(result.rowcount)


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
        text(
            "SELECT user_id, phone_e164 FROM user_ids "
            "WHERE user_id = ANY(ARRAY(SELECT json_array_elements_text(CAST(:ids AS json))))"
        ),
        {"ids": json.dumps(ids)},
    )
    return {str(r.user_id): str(r.phone_e164) for r in rows}


def users_of_phones(conn: Connection, phones: Iterable[str]) -> list[str]:
    """The user ids mapped to any of these phones (E.164)."""
    numbers = sorted(set(phones))
    if not numbers:
        return []
    rows = conn.execute(
        text(
            "SELECT user_id FROM user_ids "
            "WHERE phone_e164 = ANY(ARRAY(SELECT json_array_elements_text(CAST(:p AS json))))"
        ),
        {"p": json.dumps(numbers)},
    )
    return [str(r) for r in rows.scalars()]


def user_opt_outs(conn: Connection, user_ids: Iterable[str]) -> list[tuple[str, str]]:
    """(user id, source) of the opt-outs recorded against these user ids (``user:`` keys)."""
    keys = sorted({user_key(u) for u in user_ids})
    if not keys:
        return []
    rows = conn.execute(
        text(
            "SELECT phone_e164, source FROM opt_outs "
            "WHERE phone_e164 = ANY(ARRAY(SELECT json_array_elements_text(CAST(:k AS json))))"
        ),
        {"k": json.dumps(keys)},
    )
    return [(str(r.phone_e164).removeprefix(USER_KEY_PREFIX), str(r.source)) for r in rows]
