"""Contact profiles (seed 004): create and read schemas; read, replace, update and reset a
person's profile. ``{phone}`` is found as the registry finds it (E.164 with or without +,
or a wa_id).

Writes are checked against the newest schema and happen in one transaction: the person's
record (made when a PUT or PATCH names a number the registry does not know yet), the
registry's opt-in when ``opted_in``/``opted_in_at`` change, and the profile's document with
its generation. A refused write (422, 412) changes nothing at all.
"""

from __future__ import annotations

import re
import uuid as uuid_lib
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, RowMapping

from campaigns.domain.profile_docs import (
    PeopleValues,
    WriteMode,
    plan_write,
    render,
    values_from_text,
)
from campaigns.domain.profiles import InvalidProfile, ProfileSchema, parse_schema
from campaigns.domain.refusals import NotFound, Refusal, RefusalKind
from campaigns.domain.registry import (
    SOURCE_PROFILE,
    Change,
    InvalidPhone,
    Learned,
    person_id,
    phone_key,
)
from campaigns.services.registry import PersonNotFound
from campaigns.storage import profiles as profiles_db
from campaigns.storage import registry as registry_db
from campaigns.storage import sql
from schemas.profiles import ProfileOut, SchemaListItem, SchemaOut

DEFAULT_PAGE = 100
MAX_PAGE = 500


class PreconditionFailed(Refusal):
    default_kind = RefusalKind.PRECONDITION_FAILED

    def __init__(self, given: int, current: int) -> None:
        super().__init__(
            "precondition_failed",
            f"If-Match {given} is not the profile's generation ({current}): read it again",
        )


class InvalidIfMatch(Refusal):
    def __init__(self, value: str) -> None:
        shown = value if len(value) <= 40 else value[:40] + "..."
        super().__init__(
            "invalid_request", f"If-Match must be a profile generation (a number), not {shown!r}"
        )


_IF_MATCH = re.compile(r'\s*(?:W/)?"?([0-9]{1,18})"?\s*')


def parse_if_match(value: str | None) -> int | None:
    """``If-Match: 3`` (an ETag's quotes allowed); None or ``*``: no condition."""
    if value is None or value.strip() == "*":
        return None
    match = _IF_MATCH.fullmatch(value)
    if match is None:
        raise InvalidIfMatch(value)
    return int(match.group(1))


# --------------------------------------------------------------------------- schemas


def create_schema(engine: Engine, body: object) -> SchemaOut:
    version, _ = parse_schema(body)  # refuses a broken rule before anything is stored
    assert isinstance(body, dict)
    new = str(uuid_lib.uuid4())
    with engine.begin() as conn:
        profiles_db.insert_schema(conn, new, version, body["fields"])
    return SchemaOut(version=version, uuid=new, fields=body["fields"])


def list_schemas(
    engine: Engine, *, limit: int = DEFAULT_PAGE, before_id: int | None = None
) -> tuple[list[SchemaListItem], int | None]:
    """Newest first; the id to pass as ``before_id`` for the next page (None: no more)."""
    with engine.connect() as conn:
        rows = profiles_db.list_schemas(conn, limit=limit, before_id=before_id)
    items = [
        SchemaListItem(
            version=r["version"],
            uuid=str(r["uuid"]),
            fields=r["fields"],
            created_at=r["created_at"],
        )
        for r in rows
    ]
    return items, (int(rows[-1]["id"]) if len(rows) == limit else None)


def get_schema(engine: Engine, uuid: str) -> SchemaOut:
    with engine.connect() as conn:
        schema = _schema(conn, uuid)
    assert schema.uuid is not None
    assert schema.version is not None
    return SchemaOut(version=schema.version, uuid=schema.uuid, fields=list(schema.body))


def _schema(conn: Connection, uuid: str) -> ProfileSchema:
    try:
        canonical = str(uuid_lib.UUID(uuid))
    except ValueError:
        raise NotFound("schema", uuid[:64]) from None
    schema = profiles_db.schema_by_uuid(conn, canonical)
    if schema is None:
        raise NotFound("schema", canonical)
    return schema


# --------------------------------------------------------------------------- profiles


def get_profile(engine: Engine, phone: str, schema_uuid: str | None = None) -> ProfileOut:
    """The profile under the newest schema, or under ``schema_uuid`` (its fields only)."""
    with engine.connect() as conn:
        person = _known(conn, phone)
        schema = _schema(conn, schema_uuid) if schema_uuid else profiles_db.newest_schema(conn)
        stored = profiles_db.read_profile(conn, int(person["id"]))
        return _out(schema, stored, profiles_db.people_values(person))


def write_profile(
    engine: Engine, phone: str, mode: WriteMode, body: object, *, if_match: int | None = None
) -> ProfileOut:
    """PUT (replace), PATCH (merge) or DELETE (reset to the defaults), checked against the
    newest schema; every write adds 1 to the generation. ``if_match``: refused (412)
    unless it is the current generation."""
    with engine.begin() as conn:
        person = _known(conn, phone) if mode is WriteMode.DELETE else _person_for_write(conn, phone)
        pid = int(person["id"])
        schema = profiles_db.newest_schema(conn)
        write = plan_write(schema, mode, body, profiles_db.people_values(person))
        if write.opt_in is not None:
            at = write.opt_in.at or sql.now(conn)
            change = Change.OPTED_IN if write.opt_in.value else Change.OPT_IN_WITHDRAWN
            fact = Learned(change, at, source=SOURCE_PROFILE if write.opt_in.value else None)
            registry_db.apply(conn, [(str(person["phone_e164"]), fact)])
            person = _reread(conn, person)
        stored = profiles_db.write_profile(conn, pid, write, schema.uuid, if_match)
        if stored is None:
            assert if_match is not None
            current = profiles_db.read_profile(conn, pid).generation
            raise PreconditionFailed(if_match, current)
        return _out(schema, stored, profiles_db.people_values(person))


def set_profile_text(
    engine: Engine,
    phone: str,
    pairs: Sequence[str],
    *,
    replace: bool = False,
    if_match: int | None = None,
) -> ProfileOut:
    """``key=value`` pairs (the CLI), each value read as its field's type; a PATCH, or a
    PUT with ``replace``."""
    with engine.connect() as conn:
        schema = profiles_db.newest_schema(conn)
    body = values_from_text(schema, pairs)
    mode = WriteMode.PUT if replace else WriteMode.PATCH
    return write_profile(engine, phone, mode, body, if_match=if_match)


def _out(
    schema: ProfileSchema, stored: profiles_db.StoredProfile, people: PeopleValues
) -> ProfileOut:
    return ProfileOut(
        version=schema.version,
        schema_uuid=schema.uuid,
        generation=stored.generation,
        fields=render(schema, stored.doc, people),
    )


def _known(conn: Connection, phone: str) -> RowMapping:
    """The person ``phone`` names; 404 for nobody, or a record that was removed."""
    key = phone_key(phone)
    row = registry_db.find_person(conn, key.candidates, key.digits)
    if row is None or row["phone_e164"] is None or row["removed_at"] is not None:
        raise PersonNotFound(phone)
    return row


def _person_for_write(conn: Connection, phone: str) -> RowMapping:
    """The person a PUT or PATCH writes: a known one, else a new record of the number (as
    any operator change makes one; a removed record comes back)."""
    key = phone_key(phone)
    row = registry_db.find_person(conn, key.candidates, key.digits)
    if row is not None and row["phone_e164"] is not None and row["removed_at"] is None:
        return row
    target = str(row["phone_e164"]) if row is not None and row["phone_e164"] else key.e164
    if target is None:  # a wa_id nobody has, and no valid number either
        raise InvalidPhone(phone)
    registry_db.apply(conn, [(target, Learned(Change.SEEN, sql.now(conn)))])
    made = registry_db.find_person(conn, [target], None)
    assert made is not None
    return made


def _reread(conn: Connection, person: RowMapping) -> RowMapping:
    row = registry_db.find_person(conn, [str(person["phone_e164"])], None)
    assert row is not None
    assert person_id(str(row["phone_e164"])) == int(person["id"])
    return row


__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "InvalidProfile",
    "PreconditionFailed",
    "WriteMode",
    "create_schema",
    "get_profile",
    "get_schema",
    "list_schemas",
    "parse_if_match",
    "set_profile_text",
    "write_profile",
]
