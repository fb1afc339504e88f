"""Small SQL helpers shared by the storage modules."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, func, select

from campaigns.domain.states import ContactState


def in_list(states: Iterable[ContactState]) -> str:
    """A SQL IN list of state literals (enum values only, never user input)."""
    return ", ".join(f"'{s.value}'" for s in sorted(states))


def now(conn: Connection) -> datetime:
    """The database's clock: every timestamp of one transaction agrees with it."""
    moment: datetime = conn.execute(select(func.now())).scalar_one()
    return moment
