"""A campaign's daily send window in the recipient's local time. Pure: no I/O, no clock.

The rules (README, "Send window"):

- The window is ``[start, end)`` of the local wall clock, every day; ``end`` before ``start``
  wraps midnight (``22:00-06:00``). ``start == end`` is refused: it says nothing clear.
- A number's candidate zones come from phonenumbers: a geographic number's area (a US area
  code), else its whole country (a Russian mobile: 16 zones). It may be messaged only while
  the window is open in *every* candidate zone, so nobody is woken up.
- When the candidate zones never open together within ``HORIZON`` (48 h), or phonenumbers
  does not know the zone (``Etc/Unknown``), the campaign's fallback zone decides alone.
- Local time follows DST (zoneinfo): a window starting in a skipped hour opens when the clock
  jumps past it; in a repeated hour the wall clock decides, both times.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, NumberParseException, parse
from phonenumbers.timezone import UNKNOWN_TIMEZONE, time_zones_for_number
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

HORIZON = timedelta(hours=48)
# The fallback zone alone opens every day; a week covers any DST day that skips the window.
FALLBACK_HORIZON = timedelta(days=8)
# No zone changes its UTC offset twice within this span: sampling at it finds every change.
_OFFSET_SAMPLE = timedelta(hours=3)

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*[-–]\s*(\d{1,2}):(\d{2})\s*$")


_EQUAL = (
    "send window {window}: start and end are equal; give a window that is open part of the "
    "day, or none for no window"
)


class WindowError(ValueError):
    """A send window or zone the operator must fix; the message says how."""


def parse_window(text: str) -> tuple[time, time]:
    """``"09:00-20:00"`` -> (09:00, 20:00). ``24:00`` means midnight at the end of the day;
    a window whose start equals its end is refused."""
    match = _WINDOW.match(text)
    if match is None:
        raise WindowError(f"send window {text!r} is not HH:MM-HH:MM, e.g. 09:00-20:00")
    hours_a, minutes_a, hours_b, minutes_b = (int(x) for x in match.groups())
    start, end = _clock(hours_a, minutes_a, text), _clock(hours_b, minutes_b, text)
    if start == end:
        raise WindowError(_EQUAL.format(window=text.strip()))
    return start, end


def _clock(hours: int, minutes: int, text: str) -> time:
    if (hours, minutes) == (24, 0):
        return time(0, 0)
    if hours > 23 or minutes > 59:
        raise WindowError(f"send window {text!r}: {hours:02d}:{minutes:02d} is not a time of day")
    return time(hours, minutes)


def format_window(start: time, end: time) -> str:
    return f"{start:%H:%M}-{end:%H:%M}"


def check_zone(name: str) -> ZoneInfo:
    """An IANA zone name (``Europe/Berlin``, ``UTC``); the machine's ``localtime`` and
    abbreviations like ``EST`` are refused, so a campaign means the same on every host."""
    try:
        zone = ZoneInfo(name) if ("/" in name or name == "UTC") else None
    except (ZoneInfoNotFoundError, ValueError, OSError):
        zone = None
    if zone is None:
        raise WindowError(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin")
    return zone


@dataclass(frozen=True, slots=True)
class SendWindow:
    """Local ``[start, end)`` every day (wrapping midnight when ``end < start``), and the
    campaign's fallback zone for numbers whose own zones do not settle it."""

    start: time
    end: time
    fallback_tz: str

    def __post_init__(self) -> None:
        for edge in (self.start, self.end):
            if edge.tzinfo is not None or edge.second or edge.microsecond:
                raise WindowError("send window times are whole minutes of the local clock")
        if self.start == self.end:
            raise WindowError(_EQUAL.format(window=self))
        check_zone(self.fallback_tz)

    def __str__(self) -> str:
        return format_window(self.start, self.end)

    @property
    def fallback(self) -> ZoneInfo:
        return _zone(self.fallback_tz)

    def contains(self, local: time) -> bool:
        """Whether a local wall-clock reading lies in the window."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def is_open(self, zone: ZoneInfo, at: datetime) -> bool:
        return self.contains(at.astimezone(zone).time())


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# --------------------------------------------------------------------------- zones of a number


# A valid number's zones depend on its country, its type (a mobile maps to its whole country
# in most plans) and its longest prefix in phonenumbers' table; the type is fixed by the
# leading digits in every plan, so the table's longest prefix is a sound cache key.
_PREFIX_CACHE_MAX = 100_000
_by_prefix: dict[str, tuple[str, ...]] = {}


def zones_for_number(e164: str) -> tuple[str, ...]:
    """Candidate IANA zones of an E.164 number; ``("Etc/Unknown",)`` when phonenumbers does
    not know. Countries whose numbers all share one zone set (Germany, Japan) answer from the
    country code alone; others parse once per prefix (~50 µs)."""
    digits = e164.removeprefix("+")
    country = _country_code(digits)
    if country is not None:
        shared = _country_zones(country)
        if shared is not None:
            return shared
    key = digits[:TIMEZONE_LONGEST_PREFIX]
    zones = _by_prefix.get(key)
    if zones is None:
        zones = _lookup(e164)
        if len(_by_prefix) >= _PREFIX_CACHE_MAX:
            _by_prefix.clear()
        _by_prefix[key] = zones
    return zones


def _lookup(e164: str) -> tuple[str, ...]:
    try:
        number = parse(e164 if e164.startswith("+") else f"+{e164}")
    except NumberParseException:
        return (UNKNOWN_TIMEZONE,)
    return tuple(str(z) for z in time_zones_for_number(number))


def _country_code(digits: str) -> str | None:
    for length in (1, 2, 3):  # country codes are prefix-free
        code = digits[:length]
        if code.isdigit() and int(code) in COUNTRY_CODE_TO_REGION_CODE:
            return code
    return None


@lru_cache(maxsize=512)
def _country_zones(country: str) -> tuple[str, ...] | None:
    """The zones of every number of the country when they are all the same; else None."""
    found = {zones for prefix, zones in TIMEZONE_DATA.items() if prefix.startswith(country)}
    if len(found) != 1:
        return None
    return tuple(str(z) for z in found.pop())


# --------------------------------------------------------------------------- next opening


def next_opening(window: SendWindow, zones: Sequence[str], now_utc: datetime) -> datetime | None:
    """None when the window is open now in every candidate zone; else the earliest UTC
    instant at which it is. Zones that never open together within ``HORIZON``, an empty or
    unknown zone list: the window's fallback zone alone decides."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be an aware datetime")
    candidates = _known(zones)
    opening = _earliest_open(window, candidates, now_utc, HORIZON) if candidates else None
    if opening is None:
        opening = _earliest_open(window, (window.fallback,), now_utc, FALLBACK_HORIZON)
    if opening is None:  # a daily window of at least a minute opens within a week
        raise AssertionError(f"send window {window} never opens in {window.fallback_tz}")
    return None if opening == now_utc else opening.astimezone(UTC)


def _known(zones: Sequence[str]) -> tuple[ZoneInfo, ...]:
    if not zones or UNKNOWN_TIMEZONE in zones:
        return ()
    try:
        return tuple(_zone(name) for name in zones)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return ()  # phonenumbers names a zone this host's tz database lacks


def _earliest_open(
    window: SendWindow, zones: Sequence[ZoneInfo], now: datetime, horizon: timedelta
) -> datetime | None:
    """The first instant in ``[now, now + horizon]`` open in every zone, or None.

    Openness in a zone switches on only where its wall clock reaches ``start`` or jumps (an
    offset change), so the earliest common opening is ``now`` or one of those instants."""
    limit = now + horizon
    candidates = {now}
    for zone in zones:
        candidates.update(
            at for at in _switch_on_instants(window, zone, now, limit) if now < at <= limit
        )
    for at in sorted(candidates):
        if all(window.is_open(zone, at) for zone in zones):
            return at
    return None


def _switch_on_instants(
    window: SendWindow, zone: ZoneInfo, now: datetime, limit: datetime
) -> Iterator[datetime]:
    day = now.astimezone(zone).date() - timedelta(days=1)
    last = limit.astimezone(zone).date() + timedelta(days=1)
    while day <= last:
        wall = datetime.combine(day, window.start)
        for fold in (0, 1):  # both readings of a repeated hour
            yield wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        day += timedelta(days=1)
    yield from _offset_changes(zone, now, limit)


def _offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> Iterable[datetime]:
    """Instants in ``(start, end]`` where the zone's UTC offset changes (to the second)."""
    lo = int(start.timestamp())
    while lo < end.timestamp():
        hi = min(lo + int(_OFFSET_SAMPLE.total_seconds()), int(end.timestamp()) + 1)
        before = _offset(zone, lo)
        if _offset(zone, hi) != before:
            left, right = lo, hi
            while right - left > 1:
                middle = (left + right) // 2
                if _offset(zone, middle) == before:
                    left = middle
                else:
                    right = middle
            yield datetime.fromtimestamp(right, UTC)
        lo = hi


def _offset(zone: ZoneInfo, epoch_s: int) -> timedelta | None:
    return datetime.fromtimestamp(epoch_s, zone).utcoffset()


def openings(window: SendWindow, phones: Iterable[str], now_utc: datetime) -> list[datetime | None]:
    """``next_opening`` of each E.164 number at ``now_utc``; numbers sharing candidate zones
    share the answer, so a batch costs a handful of computations, not one per number."""
    by_zones: dict[tuple[str, ...], datetime | None] = {}
    out: list[datetime | None] = []
    for phone in phones:
        zones = zones_for_number(phone)
        if zones not in by_zones:
            by_zones[zones] = next_opening(window, zones, now_utc)
        out.append(by_zones[zones])
    return out
