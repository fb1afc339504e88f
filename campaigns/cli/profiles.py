"""Contact profiles (seed 004): ``schema create|list|show`` and ``contact profile|profile-set``.

The two ``contact`` commands join the registry's ``contact`` group. A refused schema or
profile write exits 2 with ``{"error": {"code", "message"}}`` under ``--json``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from campaigns.cli import output
from campaigns.cli.contacts import contact_group

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from schemas.profiles import ProfileOut, SchemaOut


def _engine() -> Engine:
    from campaigns.runtime.stores import resolve

    return resolve().engine


@click.group("schema")
def schema_group() -> None:
    """Contact profile schemas: typed fields every profile has (seed 004)."""


def _schema_lines(schema: SchemaOut) -> list[str]:
    lines = [f"schema {schema.uuid}  version {schema.version}  {len(schema.fields)} fields"]
    for f in schema.fields:
        private = "  private" if f.get("is_private") else ""
        null = "  null" if f.get("null") else ""
        lines.append(
            f"  {f.get('name')}: {f.get('type')} default {f.get('default')!r}{null}{private}"
        )
    return lines


@schema_group.command("create")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@output.json_option
def create(file: str) -> None:
    """Create a schema from FILE.json (- reads stdin).

    The file is seed 004's body: {"version", "fields": [...]}. From now on profile writes
    are checked against it; older profiles are not rewritten."""
    from campaigns.domain.profiles import InvalidSchema, json_body
    from campaigns.services import profiles

    raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    created = profiles.create_schema(_engine(), json_body(raw, InvalidSchema))
    output.emit(created, _schema_lines(created))


@schema_group.command("list")
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True)
@output.json_option
def list_schemas(limit: int) -> None:
    """Every schema, newest first.

    The first is the one profile writes are checked against."""
    from campaigns.services import profiles

    items, _ = profiles.list_schemas(_engine(), limit=limit)
    payload = {"schemas": [item.model_dump(mode="json") for item in items]}
    lines = [
        f"{s.uuid}  {s.created_at:%Y-%m-%d %H:%M}  {s.version}  {len(s.fields)} fields"
        for s in items
    ]
    output.emit(payload, lines or ["no schema yet: profiles have the reserved fields only"])


@schema_group.command("show")
@click.argument("uuid")
@output.json_option
def show(uuid: str) -> None:
    """One schema and its fields."""
    from campaigns.services import profiles

    schema = profiles.get_schema(_engine(), uuid)
    output.emit(schema, _schema_lines(schema))


def _profile_lines(profile: ProfileOut) -> list[str]:
    head = f"schema {profile.schema_uuid or '-'}  version {profile.version or '-'}"
    lines = [f"{head}  generation {profile.generation}"]
    lines += [f"  {name}: {_shown(value)}" for name, value in profile.fields.items()]
    return lines


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{value.get('latitude')},{value.get('longitude')}"
    return str(value).lower() if isinstance(value, bool) else str(value)


@contact_group.command("profile")
@click.argument("phone")
@click.option("--schema", "schema_uuid", metavar="UUID", help="Read under this (older) schema.")
@output.json_option
def profile(phone: str, schema_uuid: str | None) -> None:
    """A person's profile.

    Every field of the newest schema, or of an older one with --schema; private fields
    included (only the profile shows them)."""
    from campaigns.services import profiles

    shown = profiles.get_profile(_engine(), phone, schema_uuid)
    output.emit(shown, _profile_lines(shown))


@contact_group.command("profile-set")
@click.argument("phone")
@click.argument("values", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--replace", is_flag=True, help="Replace the profile: the rest take defaults.")
@click.option("--if-match", type=int, metavar="GENERATION", help="Refuse unless current.")
@output.json_option
def profile_set(phone: str, values: tuple[str, ...], replace: bool, if_match: int | None) -> None:
    """Set profile fields: age=31 consent=yes (key= sets null).

    Values are read as their field's type, as an upload reads them (true/false/yes/no/1/0,
    numbers, ISO 8601 dates in UTC, ENUM values in any case)."""
    from campaigns.services import profiles

    updated = profiles.set_profile_text(
        _engine(), phone, list(values), replace=replace, if_match=if_match
    )
    output.emit(updated, _profile_lines(updated))


COMMANDS: tuple[click.Command, ...] = (schema_group,)
