"""Contact profiles (seed 004), pure: what a write stores, how a stored profile reads under
a schema, and the profile values uploads and templates use.

A profile is stored as a JSON document of the profile's own fields (everything but
:data:`~campaigns.domain.profiles.PEOPLE_FIELDS`), with the uuid of the schema it was
written under and a ``generation``. A read shows every field of the schema it is read
under: the stored value when it is one of that field's type, else the field's default. So a
new schema never rewrites an old profile, and an older schema still reads it.

- ``PUT`` stores the newest schema's defaults with the body's values over them;
- ``PATCH`` merges the body's values into the stored document (one atomic jsonb ``||``);
- ``DELETE`` stores the defaults.

``opted_in`` / ``opted_in_at`` are the registry's opt-in, not a copy: a write that changes
them becomes one registry change (:class:`OptIn`). ``whatsapp_id`` and
``whatsapp_profile_name`` come from WhatsApp: a write may repeat them, not change them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from campaigns.domain.profiles import (
    OPT_IN_FIELDS,
    PEOPLE_FIELDS,
    READ_ONLY_FIELDS,
    FieldDef,
    InvalidProfile,
    ProfileSchema,
    cell_reader,
    check_value,
    coerce_text,
    format_datetime,
    parse_datetime,
)

MAX_ERRORS = 10


@dataclass(frozen=True, slots=True)
class PeopleValues:
    """The reserved fields the registry keeps, as it holds them for one person."""

    opted_in: bool = False
    opted_in_at: datetime | None = None
    whatsapp_profile_name: str | None = None
    whatsapp_id: str | None = None

    def value(self, name: str) -> Any:
        if name == "opted_in_at":
            return format_datetime(self.opted_in_at) if self.opted_in_at else None
        return getattr(self, name)


class WriteMode(StrEnum):
    PUT = "put"
    PATCH = "patch"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class OptIn:
    """A registry change a profile write makes: opt in (``at`` None: now), or withdraw the
    opt-in (``value`` False: no opt-in recorded; an opt-out is not touched)."""

    value: bool
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProfileWrite:
    """What one write stores: ``doc`` merged into the stored document (``merge``) or in its
    place, and the registry change it makes, if any."""

    doc: dict[str, Any]
    merge: bool
    opt_in: OptIn | None = None


def owned(schema: ProfileSchema) -> tuple[FieldDef, ...]:
    """The fields a profile document holds (the registry keeps the others)."""
    return tuple(f for f in schema.all_fields if f.name not in PEOPLE_FIELDS)


def defaults(schema: ProfileSchema) -> dict[str, Any]:
    return {f.name: f.default for f in owned(schema)}


def plan_write(
    schema: ProfileSchema, mode: WriteMode, body: object, people: PeopleValues
) -> ProfileWrite:
    """A write checked against ``schema`` (the newest). Raises :class:`InvalidProfile`
    naming every field that is unknown, of the wrong type or read-only (up to ten)."""
    if mode is WriteMode.DELETE:
        return ProfileWrite(defaults(schema), merge=False, opt_in=opt_in_write(people, {}, True))
    given = checked_values(schema, body, people)
    ours = {k: v for k, v in given.items() if k not in PEOPLE_FIELDS}
    replace = mode is WriteMode.PUT
    doc = {**defaults(schema), **ours} if replace else ours
    return ProfileWrite(doc, merge=not replace, opt_in=opt_in_write(people, given, replace))


def checked_values(schema: ProfileSchema, body: object, people: PeopleValues) -> dict[str, Any]:
    """The body's values in canonical form, each checked against its field."""
    if not isinstance(body, dict):
        raise InvalidProfile('the body must be a JSON object of fields, e.g. {"name": "Fizbo"}')
    out: dict[str, Any] = {}
    errors: list[str] = []
    for name, value in body.items():
        f = schema.get(name)
        if f is None:
            errors.append(_unknown(schema, name))
            continue
        try:
            out[name] = check_value(f, value)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        if name in READ_ONLY_FIELDS and out[name] != people.value(name):
            errors.append(f"{name}: kept from WhatsApp, read-only (a write may only repeat it)")
    if errors:
        more = f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
        raise InvalidProfile("; ".join(errors[:MAX_ERRORS]) + more)
    return out


def values_from_text(schema: ProfileSchema, pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs (the CLI) as a write's body: each value read as its field's
    type, as an upload reads a cell; an empty value is null."""
    out: dict[str, Any] = {}
    errors: list[str] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        f = schema.get(name.strip())
        if not sep or not name.strip():
            errors.append(f"{pair!r}: expected key=value")
        elif f is None:
            errors.append(_unknown(schema, name.strip()))
        elif not value.strip():
            out[f.name] = None
        else:
            try:
                out[f.name] = coerce_text(f, value)
            except ValueError as exc:
                errors.append(str(exc))
    if errors:
        raise InvalidProfile("; ".join(errors[:MAX_ERRORS]))
    return out


def _unknown(schema: ProfileSchema, name: str) -> str:
    shown = repr(name if len(name) <= 64 else name[:64] + "...")
    if schema.uuid is None:
        return f"{shown}: not a profile field (no schema was created yet: only the reserved fields)"
    return f"{shown}: not a field of the newest schema ({schema.version}, {schema.uuid})"


def opt_in_write(people: PeopleValues, given: Mapping[str, Any], replace: bool) -> OptIn | None:
    """The registry change a write of ``opted_in``/``opted_in_at`` makes, None for none.

    Left out of a PUT or a DELETE, they take their defaults (no opt-in); left out of a
    PATCH, they stay. ``opted_in_at`` is the opt-in's time: it goes with ``opted_in`` true
    (left out: now, or the time already recorded)."""
    if not any(name in given for name in OPT_IN_FIELDS) and not replace:
        return None
    target = bool(given.get("opted_in", False if replace else people.opted_in))
    at_text = given.get("opted_in_at")
    at = parse_datetime(at_text) if isinstance(at_text, str) else None
    if not target:
        if at is not None:
            raise InvalidProfile("opted_in_at: only an opt-in has a time (opted_in is false)")
        recorded = people.opted_in or people.opted_in_at is not None
        return OptIn(False) if recorded else None
    if "opted_in_at" in given and at is None:
        raise InvalidProfile("opted_in_at: an opt-in has a time; leave it out to record now")
    if people.opted_in and (at is None or at == people.opted_in_at):
        return None
    return OptIn(True, at)


# --------------------------------------------------------------------------- reads


def render(
    schema: ProfileSchema, doc: Mapping[str, Any] | None, people: PeopleValues
) -> dict[str, Any]:
    """Every field of ``schema``: the registry's for its fields, else the stored value when
    it fits the field, else the field's default."""
    stored = doc or {}
    out: dict[str, Any] = {}
    for f in schema.all_fields:
        out[f.name] = people.value(f.name) if f.name in PEOPLE_FIELDS else _read(f, stored)
    return out


def _read(f: FieldDef, stored: Mapping[str, Any]) -> Any:
    if f.name not in stored:
        return f.default
    try:
        return check_value(f, stored[f.name])
    except ValueError:  # written under a schema where it had another type
        return f.default


def filled(
    fields: Sequence[FieldDef], doc: Mapping[str, Any] | None, people: PeopleValues
) -> frozenset[str]:
    """The names of ``fields`` whose value (stored or default) is not null."""
    stored = doc or {}
    return frozenset(
        f.name
        for f in fields
        if (people.value(f.name) if f.name in PEOPLE_FIELDS else _read(f, stored)) is not None
    )


def parameter_text(value: Any) -> str:
    """A profile value as a template parameter: booleans ``true``/``false``, a location
    ``lat,lon``, null empty, anything else as shown by the API."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return f"{value['latitude']},{value['longitude']}"
    return str(value)


def fill_parameters(
    variables: Mapping[str, str],
    fields: Sequence[FieldDef],
    doc: Mapping[str, Any] | None,
    people: PeopleValues,
) -> dict[str, str]:
    """A contact's template variables at send time: its upload's value, else (no such
    column, or a blank cell) the profile's value of the field of that name."""
    out = dict(variables)
    stored = doc or {}
    for f in fields:
        current = out.get(f.name)
        if current is None or not current.strip():
            value = people.value(f.name) if f.name in PEOPLE_FIELDS else _read(f, stored)
            out[f.name] = parameter_text(value)
    return out


# --------------------------------------------------------------------------- uploads

PROFILE_INVALID = "profile_invalid"


@dataclass(frozen=True, slots=True)
class ProfileColumns:
    """What an upload's parse processes need to fill profiles (pickled with every chunk:
    small; the ``language`` field's codes are not in it).

    ``columns``: (index among the upload's variable columns, field) of each column named
    like a field of the newest schema (case ignored; the registry's fields are left to the
    registry: an ``opted_in`` column is its upload opt-in). ``hidden``: indexes of private
    fields' columns, never stored with the contact. ``fallback``: template variables a
    profile may fill, with the column that fills them in the file (None: no such column).
    """

    schema_uuid: str | None
    columns: tuple[tuple[int, FieldDef], ...] = ()
    hidden: frozenset[int] = frozenset()
    fallback: tuple[tuple[FieldDef, int | None], ...] = ()

    @property
    def active(self) -> bool:
        """Whether records have anything to do with profiles."""
        return bool(self.columns or self.fallback)


def profile_columns(
    schema: ProfileSchema, variable_columns: Sequence[str], template_variables: Sequence[str]
) -> ProfileColumns:
    columns: list[tuple[int, FieldDef]] = []
    taken: set[str] = set()
    for j, column in enumerate(variable_columns):
        f = schema.get(column.strip().casefold())
        if f is not None and f.name not in PEOPLE_FIELDS and f.name not in taken:
            columns.append((j, f))
            taken.add(f.name)
    by_field = {f.name: j for j, f in columns}
    fallback: list[tuple[FieldDef, int | None]] = []
    for name in template_variables:
        f = schema.get(name)
        if f is None or f.default is not None:  # not a field, or never null
            continue
        exact = variable_columns.index(name) if name in variable_columns else None
        fallback.append((f, exact if exact is not None else by_field.get(name)))
    hidden = frozenset(j for j, f in columns if f.is_private)
    return ProfileColumns(schema.uuid, tuple(columns), hidden, tuple(fallback))


def template_columns(schema: ProfileSchema, template_variables: Sequence[str]) -> list[str]:
    """The template variables an upload must have a column for: those that are no field of
    the newest schema (a field's value may come from the profile)."""
    return [name for name in template_variables if schema.get(name) is None]


class ProfileStager:
    """Reads one record's profile cells (made once per chunk in a parse process): the patch
    as JSON text, the reason the record is refused, and the template variables its own
    cells leave to the stored profile."""

    def __init__(self, spec: ProfileColumns) -> None:
        # Field names are a-z, 0-9 and _: their JSON keys need no escaping.
        self.readers = [(j, f'"{f.name}":', cell_reader(f)) for j, f in spec.columns]
        self.fallback = spec.fallback

    def __call__(self, values: Sequence[str]) -> tuple[str | None, str | None, tuple[str, ...]]:
        parts: list[str] = []
        for j, key, read in self.readers:
            cell = values[j]
            if not cell or cell.isspace():
                continue  # a blank cell leaves the field as it is
            try:
                parts.append(key + read(cell))
            except ValueError as exc:
                return None, str(exc), ()
        needs = tuple(
            f.name for f, j in self.fallback if j is None or not values[j] or values[j].isspace()
        )
        return ("{" + ",".join(parts) + "}" if parts else None), None, needs


def stage_profile(
    spec: ProfileColumns, values: Sequence[str]
) -> tuple[str | None, str | None, tuple[str, ...]]:
    """:class:`ProfileStager` for a single record."""
    return ProfileStager(spec)(values)
