"""Small SQL helpers shared by the storage modules."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from campaigns.domain.states import ContactState


def in_list(states: Iterable[ContactState]) -> str:
    """A SQL IN list of state literals (enum values only, never user input)."""
    return ", ".join(f"'{s.value}'" for s in sorted(states))


def now(conn: Connection) -> datetime:
    """The database's clock: every timestamp of one transaction agrees with it."""
    moment: datetime = conn.execute(select(func.now())).scalar_one()
    return moment


# --------------------------------------------------------------------------- JSON rows
# Bulk parameters of the statements run for every message travel as one JSON text: psycopg
# adapts a Python list to a Postgres array element by element in Python (a dozen arrays per
# batch were ~8 % of a dispatch worker's CPU), ``json.dumps`` is one C call. Rows are JSON
# arrays (no key per value) unpacked with jsonb (parsed once, each ``->>`` an indexed
# lookup): the cheapest of the forms measured, for the client and for Postgres alike.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def json_rows(param: str, columns: Sequence[str]) -> str:
    """A FROM item of the rows of a :func:`rows_doc` parameter (``param``: its placeholder),
    one column per ``"name type"`` of ``columns``, in the rows' value order; type ``micros``
    is a timestamptz sent as :func:`micros`.

    The rows go through an array because Postgres expects 10 rows of an ``unnest`` of an
    array it cannot see (as of the array parameters this replaced, in a generic plan) but
    100 of ``jsonb_array_elements``: joined to a table of a few thousand rows, 100 makes
    a hash join over a sequential scan cheaper than probing the primary key row by row."""
    values = ", ".join(
        f"{_value(i, type_)} AS {name}"
        for i, (name, type_) in enumerate(column.split() for column in columns)
    )
    rows = f"unnest(ARRAY(SELECT jsonb_array_elements(CAST({param} AS jsonb)))) AS r"
    return f"(SELECT {values} FROM {rows})"


def _value(i: int, type_: str) -> str:
    if type_ == "micros":  # exact to the microsecond over 1685-2255 (float8 holds the integer)
        return f"timestamptz 'epoch' + CAST(r ->> {i} AS bigint) * interval '1 microsecond'"
    return f"CAST(r ->> {i} AS {type_})"


def micros(moment: datetime | None) -> int | None:
    """A timezone-aware datetime as microseconds since 1970 for a ``micros`` column: exact,
    and a third of ``isoformat``'s cost. A naive datetime raises TypeError (no time zone
    guessed)."""
    return None if moment is None else (moment - _EPOCH) // _MICROSECOND


def rows_doc(rows: list[tuple[Any, ...]]) -> str:
    """Rows for :func:`json_rows`. Values must be JSON's own (str, int, float, bool, None;
    a StrEnum is its value): UUIDs as ``.hex`` (Postgres reads the 32 digits; a third of
    ``str``'s cost), datetimes as :func:`micros`. Text goes as is (not escaped to ASCII),
    converted to the server's encoding as any text parameter is."""
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
