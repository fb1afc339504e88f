"""SQL of contact profiles: schemas (``profile_schemas``), profiles (``profiles``), the
profile name inbound messages show (``people.whatsapp_profile_name``), and the set-based
reads and writes uploads make per chunk. Functions take a Connection and never commit."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, text
from sqlalchemy.exc import IntegrityError

from campaigns.domain.profile_docs import PeopleValues, ProfileWrite, filled
from campaigns.domain.profiles import NO_SCHEMA, FieldDef, ProfileSchema, schema_of
from campaigns.domain.registry import person_id

# --------------------------------------------------------------------------- schemas


def insert_schema(
    conn: Connection, uuid: str, version: str, body: Sequence[Mapping[str, Any]]
) -> None:
    conn.execute(
        text(
            "INSERT INTO profile_schemas (uuid, version, fields) "
            "VALUES (:uuid, :version, CAST(:fields AS jsonb))"
        ),
        {"uuid": uuid, "version": version, "fields": json.dumps(list(body))},
    )


def _schema(row: RowMapping | None) -> ProfileSchema | None:
    if row is None:
        return None
    return schema_of(str(row["uuid"]), str(row["version"]), row["fields"])


def newest_schema(conn: Connection) -> ProfileSchema:
    """The newest schema (writes are checked against it); without one, the reserved
    fields alone."""
    row = (
        conn.execute(
            text("SELECT uuid, version, fields FROM profile_schemas ORDER BY id DESC LIMIT 1")
        )
        .mappings()
        .one_or_none()
    )
    return _schema(row) or NO_SCHEMA


def schema_by_uuid(conn: Connection, uuid: str) -> ProfileSchema | None:
    row = (
        conn.execute(
            text("SELECT uuid, version, fields FROM profile_schemas WHERE uuid = CAST(:u AS uuid)"),
            {"u": uuid},
        )
        .mappings()
        .one_or_none()
    )
    return _schema(row)


def list_schemas(conn: Connection, *, limit: int, before_id: int | None) -> list[RowMapping]:
    """Newest first: (id, uuid, version, fields, created_at)."""
    return list(
        conn.execute(
            text(
                "SELECT id, uuid, version, fields, created_at FROM profile_schemas "
                "WHERE CAST(:before AS bigint) IS NULL OR id < :before "
                "ORDER BY id DESC LIMIT :limit"
            ),
            {"before": before_id, "limit": limit},
        ).mappings()
    )


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True, slots=True)
class StoredProfile:
    generation: int
    doc: dict[str, Any]
    schema_uuid: str | None


def people_values(person: RowMapping) -> PeopleValues:
    """The registry's reserved fields from a ``people`` row."""
    return PeopleValues(
        opted_in=bool(person["opted_in"]),
        opted_in_at=person["opted_in_at"],
        whatsapp_profile_name=person["whatsapp_profile_name"],
        whatsapp_id=person["wa_id"],
    )


def read_profile(conn: Connection, pid: int) -> StoredProfile:
    """A person's stored profile; one without a row has nothing stored at generation 0."""
    row = conn.execute(
        text("SELECT generation, fields, schema_uuid FROM profiles WHERE person_id = :pid"),
        {"pid": pid},
    ).one_or_none()
    if row is None:
        return StoredProfile(0, {}, None)
    uuid = str(row.schema_uuid) if row.schema_uuid is not None else None
    return StoredProfile(int(row.generation), dict(row.fields), uuid)


_WRITE = """
UPDATE profiles SET
    fields = CASE WHEN :merge THEN fields || CAST(:doc AS jsonb) ELSE CAST(:doc AS jsonb) END,
    generation = generation + 1, schema_uuid = CAST(:uuid AS uuid), updated_at = now()
WHERE person_id = :pid AND (CAST(:if_match AS bigint) IS NULL OR generation = :if_match)
RETURNING generation, fields, schema_uuid
"""


def write_profile(
    conn: Connection, pid: int, write: ProfileWrite, schema_uuid: str | None, if_match: int | None
) -> StoredProfile | None:
    """Applies one write atomically (a PATCH is one jsonb ``||`` under the row's lock, so
    concurrent PATCHes all apply); None when ``if_match`` is not the current generation."""
    conn.execute(
        text("INSERT INTO profiles (person_id) VALUES (:pid) ON CONFLICT (person_id) DO NOTHING"),
        {"pid": pid},
    )
    row = conn.execute(
        text(_WRITE),
        {
            "pid": pid,
            "merge": write.merge,
            "doc": json.dumps(write.doc),
            "uuid": schema_uuid,
            "if_match": if_match,
        },
    ).one_or_none()
    if row is None:
        return None
    uuid = str(row.schema_uuid) if row.schema_uuid is not None else None
    return StoredProfile(int(row.generation), dict(row.fields), uuid)


def forget(conn: Connection, phones: Collection[str]) -> None:
    """A removed person's profile and WhatsApp profile name go with the record."""
    if not phones:
        return
    ids = sorted(person_id(p) for p in phones)
    conn.execute(
        text("DELETE FROM profiles WHERE person_id = ANY(CAST(:ids AS bigint[]))"), {"ids": ids}
    )
    conn.execute(
        text(
            "UPDATE people SET whatsapp_profile_name = NULL "
            "WHERE id = ANY(CAST(:ids AS bigint[])) AND whatsapp_profile_name IS NOT NULL"
        ),
        {"ids": ids},
    )


# --------------------------------------------------------------------------- uploads

# One statement per chunk: each person's patch merged into its profile (PATCH semantics), a
# profile made where there is none. The people without a profile in the statement's snapshot
# (most of them: new numbers) get a plain INSERT (ON CONFLICT's speculative insertion costs
# about half as much again per row); a profile another transaction made meanwhile makes it
# fail, and the chunk's patches go again in the statement that settles that (a savepoint
# keeps the rest of the chunk). Rows are taken in id order: chunks that share people lock
# them in the same order.
_DOCS = "SELECT CAST(d.key AS bigint) AS id, d.value FROM jsonb_each(CAST(:docs AS jsonb)) AS d"
_PATCH_FAST = f"""
WITH d AS ({_DOCS}), locked AS (
    SELECT p.person_id FROM profiles p JOIN d ON d.id = p.person_id
    ORDER BY p.person_id FOR UPDATE OF p
), changed AS (
    UPDATE profiles p SET fields = p.fields || d.value, generation = p.generation + 1,
        schema_uuid = CAST(:uuid AS uuid), updated_at = now()
    FROM d WHERE p.person_id = d.id AND p.person_id IN (SELECT person_id FROM locked)
)
INSERT INTO profiles (person_id, schema_uuid, generation, fields)
SELECT d.id, CAST(:uuid AS uuid), 1, d.value FROM d
WHERE NOT EXISTS (SELECT 1 FROM profiles x WHERE x.person_id = d.id)
ORDER BY d.id
"""
_PATCH_RACING = f"""
INSERT INTO profiles AS p (person_id, schema_uuid, generation, fields)
SELECT d.id, CAST(:uuid AS uuid), 1, d.value FROM ({_DOCS}) d
ORDER BY d.id
ON CONFLICT (person_id) DO UPDATE SET
    fields = p.fields || EXCLUDED.fields, generation = p.generation + 1,
    schema_uuid = EXCLUDED.schema_uuid, updated_at = now()
"""


def patch_many(conn: Connection, schema_uuid: str | None, docs: str) -> None:
    """``docs``: a JSON object ``{"<person id>": {field: value, ...}, ...}`` (built by the
    parse processes as text, so nothing is encoded twice)."""
    params = {"uuid": schema_uuid, "docs": docs}
    try:
        with conn.begin_nested():
            conn.execute(text(_PATCH_FAST), params)
    except IntegrityError as exc:
        if getattr(getattr(exc.orig, "diag", None), "constraint_name", None) != "pk_profiles":
            raise
        conn.execute(text(_PATCH_RACING), params)


def filled_for(
    conn: Connection, phones: Collection[str], fields: Sequence[FieldDef]
) -> dict[str, frozenset[str]]:
    """Of these people (E.164), which of ``fields`` hold a value (stored or by default)."""
    if not phones:
        return {}
    rows = conn.execute(
        text(
            """
            SELECT p.phone_e164, p.opted_in, p.opted_in_at, p.whatsapp_profile_name, p.wa_id,
                   f.fields
            FROM people p LEFT JOIN profiles f ON f.person_id = p.id
            WHERE p.id = ANY(CAST(:ids AS bigint[]))
            """
        ),
        {"ids": sorted(person_id(p) for p in phones)},
    ).mappings()
    return {str(r["phone_e164"]): filled(fields, r["fields"], people_values(r)) for r in rows}


# --------------------------------------------------------------------------- webhooks


def record_profile_names(conn: Connection, names: Mapping[str, str]) -> int:
    """Keeps the WhatsApp profile name inbound messages show (E.164 -> name) for the
    people the registry knows; returns how many changed. Rows locked in id order."""
    if not names:
        return 0
    rows = [{"id": person_id(phone), "name": name} for phone, name in names.items()]
    result = conn.execute(
        text(
            """
            WITH v AS (
                SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS v(id bigint, name text)
            ), locked AS (
                SELECT p.id, v.name FROM people p JOIN v ON v.id = p.id
                WHERE p.removed_at IS NULL AND p.whatsapp_profile_name IS DISTINCT FROM v.name
                ORDER BY p.id FOR UPDATE OF p
            )
            UPDATE people p SET whatsapp_profile_name = locked.name
            FROM locked WHERE p.id = locked.id
            """
        ),
        {"rows": json.dumps(rows)},
    )
    return int(result.rowcount)
