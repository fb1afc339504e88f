"""Opted-out phone numbers: written by STOP replies and 131050 answers, read by uploads."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import Connection, text


def insert_opt_outs(conn: Connection, phones: Iterable[str], *, source: str) -> int:
    """Records E.164 numbers as opted out; returns how many were new."""
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
