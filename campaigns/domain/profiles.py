"""Contact profile schemas and values (seed 004), pure.

A *schema* is a version string and a list of typed fields, created whole and never changed
(a new one gets a new uuid; the newest is the one writes are checked against). Every schema
also has the reserved fields of :data:`RESERVED`. This module holds:

- :func:`parse_schema`: a request body -> the schema's fields, or :class:`InvalidSchema`
  naming the field and the rule it breaks (seed 004's rules, one by one);
- :func:`check_value` (a JSON value) and :func:`coerce_text` (a CSV cell): a value of a
  field's type in its canonical form, or a ``ValueError`` whose message names the field;
- :data:`PEOPLE_FIELDS`: reserved fields the registry keeps (``people``), not the profile.

What a profile write does, how a stored profile reads under a schema and how template
parameters come out of it is in :mod:`campaigns.domain.profile_docs`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from campaigns.domain.languages import iso_639_3
from campaigns.domain.refusals import Refusal, RefusalKind


class FieldType(StrEnum):
    DATETIME = "DATETIME"
    BOOLEAN = "BOOLEAN"
    STRING = "STRING"
    FLOAT = "FLOAT"
    INTEGER = "INTEGER"
    ENUM = "ENUM"
    LOCATION = "LOCATION"


MAX_FIELDS = 200
MAX_OPTIONS = 1_000
MAX_NAME = 64
MAX_DISPLAY = 200
MAX_VERSION = 100
MAX_STRING = 4_096
_INT64 = 2**63

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_VALUE = re.compile(r"[A-Z][A-Z0-9_]*")
_FIELD_KEYS = frozenset({"name", "display", "type", "default", "is_private", "null", "enum"})
_REQUIRED_KEYS = ("name", "display", "type", "default", "is_private")


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field of a schema. ``values``: an ENUM's allowed values (empty for ``language``,
    whose options are the ISO 639-3 codes: ``languages``)."""

    name: str
    type: FieldType
    display: str
    default: Any
    nullable: bool
    is_private: bool = False
    options: tuple[tuple[str, str], ...] = ()  # ENUM (value, display), in order
    values: frozenset[str] = frozenset()
    languages: bool = False

    def allows(self, value: str) -> bool:
        return value in iso_639_3() if self.languages else value in self.values


def _reserved(name: str, kind: FieldType, display: str, default: Any = None) -> FieldDef:
    return FieldDef(
        name, kind, display, default, nullable=default is None, languages=name == "language"
    )


RESERVED: tuple[FieldDef, ...] = (
    _reserved("name", FieldType.STRING, "Name"),
    _reserved("surname", FieldType.STRING, "Surname"),
    _reserved("location", FieldType.LOCATION, "Location"),
    _reserved("language", FieldType.ENUM, "Language (ISO 639-3)"),
    _reserved("opted_in", FieldType.BOOLEAN, "Opted in", default=False),
    _reserved("opted_in_at", FieldType.DATETIME, "Opted in at"),
    _reserved("birthday", FieldType.DATETIME, "Birthday"),
    _reserved("whatsapp_profile_name", FieldType.STRING, "WhatsApp profile name"),
    _reserved("whatsapp_id", FieldType.STRING, "WhatsApp ID"),
)
"""Seed 004's reserved fields: always present, whatever the schema."""

RESERVED_NAMES = frozenset(f.name for f in RESERVED)
OPT_IN_FIELDS = ("opted_in", "opted_in_at")
READ_ONLY_FIELDS = ("whatsapp_profile_name", "whatsapp_id")
PEOPLE_FIELDS = frozenset({*OPT_IN_FIELDS, *READ_ONLY_FIELDS})
"""Reserved fields the registry keeps: ``opted_in``/``opted_in_at`` are its opt-in (one
truth), ``whatsapp_id`` its wa_id, ``whatsapp_profile_name`` what inbound messages say."""


@dataclass(frozen=True, slots=True)
class ProfileSchema:
    """A stored schema (``uuid``/``version`` None: none was created yet, only the reserved
    fields exist). ``fields``: its own fields; ``body``: them as they were posted."""

    uuid: str | None
    version: str | None
    fields: tuple[FieldDef, ...] = ()
    body: tuple[Mapping[str, Any], ...] = ()
    by_name: Mapping[str, FieldDef] = field(default_factory=dict, compare=False)

    @property
    def all_fields(self) -> tuple[FieldDef, ...]:
        return RESERVED + self.fields

    def get(self, name: str) -> FieldDef | None:
        return self.by_name.get(name) or _RESERVED_BY_NAME.get(name)


_RESERVED_BY_NAME = {f.name: f for f in RESERVED}
NO_SCHEMA = ProfileSchema(None, None)


class InvalidSchema(Refusal):
    def __init__(self, message: str) -> None:
        super().__init__("invalid_schema", message)


class InvalidProfile(Refusal):
    def __init__(self, message: str) -> None:
        super().__init__("invalid_profile", message)


# --------------------------------------------------------------------------- schemas


def parse_schema(body: object) -> tuple[str, tuple[FieldDef, ...]]:
    """Seed 004's schema body -> (version, fields). Raises :class:`InvalidSchema` at the
    first rule broken, naming the field (``fields[i] (name)``) and the rule."""
    if not isinstance(body, dict):
        raise InvalidSchema("the body must be a JSON object with version and fields")
    unknown = sorted(set(body) - {"version", "fields"})
    if unknown:
        raise InvalidSchema(f"unknown key(s) {', '.join(unknown)}: a schema has version, fields")
    version = body.get("version")
    if not isinstance(version, str) or not version.strip() or len(version) > MAX_VERSION:
        raise InvalidSchema(
            f"version: required, a non-empty string of at most {MAX_VERSION} characters"
        )
    items = body.get("fields")
    if not isinstance(items, list):
        raise InvalidSchema("fields: required, a list of field objects")
    if len(items) > MAX_FIELDS:
        raise InvalidSchema(f"fields: at most {MAX_FIELDS} fields, got {len(items)}")
    fields: list[FieldDef] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        parsed = parse_field(item, f"fields[{i}]")
        if parsed.name in seen:
            raise InvalidSchema(
                f"fields[{i}] ({parsed.name}): name is not unique (fields[{seen[parsed.name]}] "
                "has it too)"
            )
        seen[parsed.name] = i
        fields.append(parsed)
    return version, tuple(fields)


def schema_of(
    uuid: str | None, version: str | None, body: Sequence[Mapping[str, Any]]
) -> ProfileSchema:
    """A stored schema back from its posted fields (valid: they were checked when posted)."""
    fields = tuple(parse_field(item, f"fields[{i}]") for i, item in enumerate(body))
    return ProfileSchema(uuid, version, fields, tuple(body), {f.name: f for f in fields})


def parse_field(item: object, where: str) -> FieldDef:
    if not isinstance(item, dict):
        raise InvalidSchema(f"{where}: a field is an object with {', '.join(_REQUIRED_KEYS)}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise InvalidSchema(
            f"{where}: name {name!r} must be lower case, start with a letter and hold only "
            f"a-z, 0-9 and _ (at most {MAX_NAME} characters)"
        )
    where = f"{where} ({name})"
    if name in RESERVED_NAMES:
        raise InvalidSchema(
            f"{where}: name is a reserved field ({', '.join(sorted(RESERVED_NAMES))})"
        )
    unknown = sorted(set(item) - _FIELD_KEYS)
    if unknown:
        raise InvalidSchema(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    missing = [key for key in _REQUIRED_KEYS if key not in item]
    if missing:
        raise InvalidSchema(f"{where}: {', '.join(missing)} required (every field has them)")
    kind = _field_type(item["type"], where)
    display = item["display"]
    if not isinstance(display, str) or not display.strip() or len(display) > MAX_DISPLAY:
        raise InvalidSchema(f"{where}: display must be a non-empty string (at most {MAX_DISPLAY})")
    if not isinstance(item["is_private"], bool):
        raise InvalidSchema(f"{where}: is_private must be true or false")
    nullable = item.get("null", False)
    if not isinstance(nullable, bool):
        raise InvalidSchema(f'{where}: "null" must be true or false')
    if kind is FieldType.BOOLEAN and nullable:
        raise InvalidSchema(f"{where}: a BOOLEAN field can never be null")
    options = _enum_options(item, kind, where)
    draft = FieldDef(
        name,
        kind,
        display,
        None,
        nullable,
        item["is_private"],
        options,
        frozenset(value for value, _ in options),
    )
    return replace(draft, default=_default(draft, item["default"], where))


def _field_type(value: object, where: str) -> FieldType:
    try:
        return FieldType(value if isinstance(value, str) else repr(value))
    except ValueError:
        names = ", ".join(t.value for t in FieldType)
        raise InvalidSchema(f"{where}: type {value!r} is not one of {names}") from None


def _enum_options(
    item: Mapping[str, Any], kind: FieldType, where: str
) -> tuple[tuple[str, str], ...]:
    if kind is not FieldType.ENUM:
        if "enum" in item:
            raise InvalidSchema(f"{where}: enum is only for an ENUM field (this one is {kind})")
        return ()
    options = item.get("enum")
    if not isinstance(options, list) or not options:
        raise InvalidSchema(f"{where}: an ENUM field needs enum, a non-empty list of options")
    if len(options) > MAX_OPTIONS:
        raise InvalidSchema(f"{where}: enum has more than {MAX_OPTIONS} options")
    out: list[tuple[str, str]] = []
    for k, option in enumerate(options):
        if not isinstance(option, dict) or set(option) != {"value", "display"}:
            raise InvalidSchema(f"{where}: enum[{k}] must be an object with value and display")
        value, display = option["value"], option["display"]
        if not isinstance(value, str) or not _VALUE.fullmatch(value) or len(value) > MAX_NAME:
            raise InvalidSchema(
                f"{where}: enum[{k}] value {value!r} must be upper case, start with a letter and "
                "hold only A-Z, 0-9 and _"
            )
        if not isinstance(display, str) or not display.strip() or len(display) > MAX_DISPLAY:
            raise InvalidSchema(f"{where}: enum[{k}] ({value}) display must be a non-empty string")
        if any(value == seen for seen, _ in out):
            raise InvalidSchema(f"{where}: enum value {value} appears twice")
        out.append((value, display))
    return tuple(out)


def _default(f: FieldDef, value: object, where: str) -> Any:
    if value is None:
        if f.type is FieldType.BOOLEAN:
            raise InvalidSchema(f"{where}: a BOOLEAN field needs a default of true or false")
        if not f.nullable:
            raise InvalidSchema(
                f'{where}: default is null, which only a field with "null": true may have'
            )
        return None
    try:
        return check_value(f, value)
    except ValueError as exc:
        raise InvalidSchema(f"{where}: default: {exc}") from None


# --------------------------------------------------------------------------- values


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def expected(f: FieldDef) -> str:
    """What a field takes, for messages: ``INTEGER``, ``ENUM (one of MALE, FEMALE)``, ..."""
    if f.type is FieldType.ENUM:
        if f.languages:
            return "ENUM (an ISO 639-3 code, e.g. ENG)"
        values = [value for value, _ in f.options]
        shown = ", ".join(values[:12]) + (", ..." if len(values) > 12 else "")
        return f"ENUM (one of {shown})"
    if f.type is FieldType.DATETIME:
        return "DATETIME (ISO 8601, UTC)"
    if f.type is FieldType.LOCATION:
        return "LOCATION ({latitude: -90..90, longitude: -180..180})"
    return f.type.value


def mismatch(f: FieldDef, value: object) -> str:
    """``age: expected INTEGER, got 'x'``; a private field's value is never repeated."""
    if f.is_private:
        return f"{f.name}: expected {expected(f)} (the value is private: not shown)"
    return f"{f.name}: expected {expected(f)}, got {_shown(value)}"


def check_value(f: FieldDef, value: object) -> Any:
    """A JSON value of field ``f`` in canonical form (FLOAT a float, DATETIME
    ``YYYY-MM-DDTHH:MM:SSZ``, LOCATION ``{latitude, longitude}`` floats). Raises ValueError
    with :func:`mismatch`'s message (null: "may not be null")."""
    if value is None:
        if f.nullable:
            return None
        raise ValueError(f"{f.name}: may not be null")
    checked = _CHECKS[f.type](f, value)
    if checked is _BAD:
        raise ValueError(mismatch(f, value))
    return checked


_BAD: Any = object()


def _string(f: FieldDef, v: object) -> Any:
    return v if isinstance(v, str) and len(v) <= MAX_STRING else _BAD


def _integer(f: FieldDef, v: object) -> Any:
    ok = isinstance(v, int) and not isinstance(v, bool) and -_INT64 <= v < _INT64
    return v if ok else _BAD


def _float(f: FieldDef, v: object) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return _BAD
    number = float(v) if -(2**1023) < v < 2**1023 else math.inf
    return number if math.isfinite(number) else _BAD


def _boolean(f: FieldDef, v: object) -> Any:
    return v if isinstance(v, bool) else _BAD


def _enum(f: FieldDef, v: object) -> Any:
    return v if isinstance(v, str) and f.allows(v) else _BAD


def _datetime(f: FieldDef, v: object) -> Any:
    if not isinstance(v, str):
        return _BAD
    parsed = parse_datetime(v)
    return _BAD if parsed is None else format_datetime(parsed)


def _location(f: FieldDef, v: object) -> Any:
    if not isinstance(v, dict) or set(v) != {"latitude", "longitude"}:
        return _BAD
    lat, lon = (_float(f, v["latitude"]), _float(f, v["longitude"]))
    if lat is _BAD or lon is _BAD or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return _BAD
    return {"latitude": lat, "longitude": lon}


_CHECKS = {
    FieldType.STRING: _string,
    FieldType.INTEGER: _integer,
    FieldType.FLOAT: _float,
    FieldType.BOOLEAN: _boolean,
    FieldType.ENUM: _enum,
    FieldType.DATETIME: _datetime,
    FieldType.LOCATION: _location,
}


def parse_datetime(text: str) -> datetime | None:
    """ISO 8601 (a date alone is midnight) in UTC: ``Z``, ``+00:00`` or no offset (read as
    UTC); any other offset, or no ISO 8601 at all, is None."""
    if not 8 <= len(text) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    offset = parsed.utcoffset()
    if offset is None:
        return parsed.replace(tzinfo=UTC)
    return parsed if not offset else None


def format_datetime(value: datetime) -> str:
    """``2026-12-01T09:00:00Z`` (fractions of a second when there are any)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat() + "Z"


# --------------------------------------------------------------------------- CSV cells

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,19}")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_PAIR = re.compile(r"\s*([^,;\s]+)\s*[,;\s]\s*([^,;\s]+)\s*")


def coerce_text(f: FieldDef, cell: str) -> Any:
    """A CSV cell (not blank) as a value of ``f``: true/false/yes/no/1/0 for BOOLEAN, a
    number for INTEGER/FLOAT, an ISO 8601 date for DATETIME, the value upper-cased for ENUM,
    ``lat,lon`` for LOCATION. Raises ValueError with :func:`mismatch`'s message."""
    text = cell.strip()
    kind = f.type
    value: Any = _BAD
    if kind is FieldType.STRING:
        value = _string(f, text)
    elif kind is FieldType.INTEGER:
        value = int(text) if _INTEGER_TEXT.fullmatch(text) else _BAD
        value = _integer(f, value) if value is not _BAD else _BAD
    elif kind is FieldType.FLOAT:
        value = _float(f, float(text)) if _FLOAT_TEXT.fullmatch(text) else _BAD
    elif kind is FieldType.BOOLEAN:
        folded = text.casefold()
        value = True if folded in _TRUE else False if folded in _FALSE else _BAD
    elif kind is FieldType.ENUM:
        value = _enum(f, text.upper())
    elif kind is FieldType.DATETIME:
        value = _datetime(f, text)
    elif kind is FieldType.LOCATION:
        pair = _PAIR.fullmatch(text)
        if pair is not None and all(_FLOAT_TEXT.fullmatch(p) for p in pair.groups()):
            lat, lon = (float(p) for p in pair.groups())
            value = _location(f, {"latitude": lat, "longitude": lon})
    if value is _BAD:
        raise ValueError(mismatch(f, text))
    return value


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_BOOLEAN_JSON = {**dict.fromkeys(_TRUE, "true"), **dict.fromkeys(_FALSE, "false")}


def cell_reader(f: FieldDef) -> Callable[[str], str]:
    """:func:`coerce_text` for one field, answering the value as JSON text: what an upload's
    parse processes run per cell (the common types without building a value first)."""

    def integer(cell: str) -> str:
        text = cell.strip()
        if _INTEGER_TEXT.fullmatch(text) and -_INT64 <= (number := int(text)) < _INT64:
            return str(number)
        raise ValueError(mismatch(f, text))

    def enum(cell: str) -> str:
        value = cell.strip().upper()
        if f.allows(value):
            return f'"{value}"'  # A-Z, 0-9 and _: nothing to escape
        raise ValueError(mismatch(f, cell.strip()))

    def boolean(cell: str) -> str:
        found = _BOOLEAN_JSON.get(cell.strip().casefold())
        if found is None:
            raise ValueError(mismatch(f, cell.strip()))
        return found

    def string(cell: str) -> str:
        text = cell.strip()
        if len(text) > MAX_STRING:
            raise ValueError(mismatch(f, text))
        return _COMPACT(text)

    def other(cell: str) -> str:
        return _COMPACT(coerce_text(f, cell))

    readers = {
        FieldType.INTEGER: integer,
        FieldType.ENUM: enum,
        FieldType.BOOLEAN: boolean,
        FieldType.STRING: string,
    }
    return readers.get(f.type, other)


# --------------------------------------------------------------------------- bodies

MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(Refusal):
    def __init__(self) -> None:
        super().__init__(
            "body_too_large",
            f"the body is larger than {MAX_BODY_BYTES:,} bytes",
            kind=RefusalKind.TOO_LARGE,
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_body(raw: bytes, refusal: type[InvalidSchema] | type[InvalidProfile]) -> object:
    """A request body (or a file) as JSON; not JSON at all is ``refusal`` with the reason."""
    if len(raw) > MAX_BODY_BYTES:
        raise BodyTooLarge()
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise refusal(f"the body is not JSON: {str(exc)[:200]}") from None
