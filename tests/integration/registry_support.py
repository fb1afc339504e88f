"""Helpers of the registry tests: what the people table holds, and facts written as the
registry's own writers do."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from campaigns.domain.registry import Change, Learned
from campaigns.storage import registry as registry_db

# Every opt-out as (key, source): a phone, or ``user:<id>`` for one known only by a user id.
OPT_OUTS = """
SELECT coalesce(phone_e164, 'user:' || user_id) AS phone_e164, opt_out_source AS source
FROM people WHERE opted_out
"""


def learn(db: Engine, phone: str, change: Change, **fields: object) -> None:
    """Writes one change through the registry (as the API and dispatch do)."""
    with db.begin() as conn:
        registry_db.apply(conn, [(phone, Learned(change, datetime.now(UTC), **fields))])  # type: ignore[arg-type]
