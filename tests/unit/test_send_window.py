"""The recipient-local send window: parsing, zones of a number, next opening (DST included),
and the dispatch step that keeps closed windows away from the gate."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from campaigns.domain import send_window as sw
from campaigns.domain.send_window import (
    HORIZON,
    SendWindow,
    WindowError,
    next_opening,
    openings,
    parse_window,
    zones_for_number,
)
from campaigns.domain.states import ContactState
from campaigns.services.dispatch import send
from campaigns.services.dispatch.batch import recorded_outcome
from schemas.api import CampaignCreate
from tests.unit.dispatch_fakes import AcceptAll, RecordingGate, claimed, plan
from tests.unit.dispatch_fakes import send as send_batch

BERLIN, NEW_YORK, TOKYO = "Europe/Berlin", "America/New_York", "Asia/Tokyo"
RUSSIAN_MOBILE = "+79161234567"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0
) -> datetime:
    """That wall-clock time in ``zone``, as UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold).astimezone(
        UTC
    )


def window(text: str, fallback: str = BERLIN) -> SendWindow:
    return SendWindow(*parse_window(text), fallback)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("09:00-20:00", time(9), time(20)),
        (" 9:00 - 20:30 ", time(9), time(20, 30)),
        ("22:00–06:00", time(22), time(6)),  # an en dash, as people type it
        ("18:00-24:00", time(18), time(0)),
    ],
)
def test_parse_window(text: str, start: time, end: time) -> None:
    assert parse_window(text) == (start, end)


@pytest.mark.parametrize("text", ["9-20", "09:00", "25:00-10:00", "09:60-10:00", "", "a-b"])
def test_parse_refuses_what_is_not_a_window(text: str) -> None:
    with pytest.raises(WindowError):
        parse_window(text)


def test_a_window_of_start_equal_end_is_refused() -> None:
    with pytest.raises(WindowError, match="start and end are equal"):
        window("09:00-09:00")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Etc/Unknown", "localtime", "EST", "", "../x"])
def test_an_unknown_fallback_zone_is_refused(zone: str) -> None:
    with pytest.raises(WindowError, match="unknown time zone"):
        SendWindow(time(9), time(20), zone)


def test_window_times_are_whole_minutes() -> None:
    with pytest.raises(WindowError, match="whole minutes"):
        SendWindow(time(9, 0, 30), time(20), BERLIN)


def test_a_window_wrapping_midnight_contains_the_night_not_the_day() -> None:
    night = window("22:00-06:00")
    assert all(night.contains(t) for t in (time(22), time(23, 59), time(0), time(5, 59)))
    assert not any(night.contains(t) for t in (time(6), time(12), time(21, 59)))
    day = window("09:00-20:00")
    assert day.contains(time(9)) and day.contains(time(19, 59))
    assert not day.contains(time(20)) and not day.contains(time(8, 59))


# --------------------------------------------------------------------------- zones of a number


@pytest.mark.parametrize(
    ("e164", "zones"),
    [
        ("+4915120000001", (BERLIN,)),
        ("+12125551234", (NEW_YORK,)),
        ("+14155552671", ("America/Los_Angeles",)),  # US: one zone per area code
        ("+81312345678", (TOKYO,)),
        ("+74951234567", ("Europe/Moscow",)),  # a Moscow landline: its area's zone
        ("+882345678901", ("Etc/Unknown",)),  # not a number phonenumbers can place
    ],
)
def test_zones_for_number(e164: str, zones: tuple[str, ...]) -> None:
    assert zones_for_number(e164) == zones


def test_a_russian_mobile_may_be_in_any_of_sixteen_zones() -> None:
    zones = zones_for_number(RUSSIAN_MOBILE)
    assert len(zones) == 16
    assert {"Europe/Moscow", "Asia/Vladivostok", "Asia/Anadyr"} <= set(zones)


def test_the_prefix_cache_answers_like_phonenumbers() -> None:
    import phonenumbers
    from phonenumbers.timezone import time_zones_for_number

    sw._by_prefix.clear()
    for e164 in ("+12125551234", "+12125551299", "+79161234567", "+74951234567"):
        direct = tuple(time_zones_for_number(phonenumbers.parse(e164)))
        assert zones_for_number(e164) == direct
        assert zones_for_number(e164) == direct  # the cached answer
    assert len(sw._by_prefix) == 3  # the New York numbers share their first nine digits


# --------------------------------------------------------------------------- next opening


def test_open_now_is_none_and_closed_gives_the_next_start() -> None:
    day = window("09:00-20:00")
    assert next_opening(day, (BERLIN,), local(BERLIN, 2026, 11, 23, 12, 0)) is None
    before = local(BERLIN, 2026, 11, 23, 7, 30)
    assert next_opening(day, (BERLIN,), before) == local(BERLIN, 2026, 11, 23, 9, 0)
    after = local(BERLIN, 2026, 11, 23, 20, 0)  # the end is exclusive
    assert next_opening(day, (BERLIN,), after) == local(BERLIN, 2026, 11, 24, 9, 0)


def test_a_window_wrapping_midnight() -> None:
    night = window("22:00-06:00")
    noon = local(BERLIN, 2026, 11, 23, 12, 0)
    assert next_opening(night, (BERLIN,), noon) == local(BERLIN, 2026, 11, 23, 22, 0)
    assert next_opening(night, (BERLIN,), local(BERLIN, 2026, 11, 23, 23, 30)) is None
    assert next_opening(night, (BERLIN,), local(BERLIN, 2026, 11, 24, 3, 0)) is None
    morning = local(BERLIN, 2026, 11, 24, 6, 0)
    assert next_opening(night, (BERLIN,), morning) == local(BERLIN, 2026, 11, 24, 22, 0)


def test_berlin_spring_forward_day() -> None:
    # 2026-03-29: at 01:00 UTC Berlin's clocks jump from 02:00 CET to 03:00 CEST.
    day = window("09:00-20:00")
    saturday_night = utc(2026, 3, 28, 20, 0)  # 21:00 CET
    assert next_opening(day, (BERLIN,), saturday_night) == utc(2026, 3, 29, 7, 0)  # 09:00 CEST
    # A window starting in the skipped hour opens when the clock jumps past its start.
    skipped = window("02:30-05:00")
    assert next_opening(skipped, (BERLIN,), utc(2026, 3, 29, 0, 30)) == utc(2026, 3, 29, 1, 0)
    assert next_opening(skipped, (BERLIN,), utc(2026, 3, 29, 1, 0)) is None
    # The day after, 02:30 exists again (CEST).
    assert next_opening(skipped, (BERLIN,), utc(2026, 3, 29, 3, 0)) == utc(2026, 3, 30, 0, 30)


def test_berlin_fall_back_day() -> None:
    # 2026-10-25: at 01:00 UTC Berlin's clocks go back from 03:00 CEST to 02:00 CET.
    day = window("09:00-20:00")
    saturday_night = utc(2026, 10, 24, 19, 0)  # 21:00 CEST
    assert next_opening(day, (BERLIN,), saturday_night) == utc(2026, 10, 25, 8, 0)  # 09:00 CET
    # The repeated hour is in the window twice: 02:15 CEST, then 02:15 CET.
    repeated = window("02:15-02:45")
    assert next_opening(repeated, (BERLIN,), utc(2026, 10, 24, 23, 0)) == utc(2026, 10, 25, 0, 15)
    assert next_opening(repeated, (BERLIN,), utc(2026, 10, 25, 0, 50)) == utc(2026, 10, 25, 1, 15)


def test_a_multi_zone_number_waits_until_every_zone_is_open() -> None:
    # November: Bucharest (UTC+2) opens 09:00 at 07:00 UTC; Anadyr (UTC+12) closes 20:00 at
    # 08:00 UTC. The only hour in which all sixteen zones are awake.
    day = window("09:00-20:00")
    zones = zones_for_number(RUSSIAN_MOBILE)
    assert next_opening(day, zones, utc(2026, 11, 23, 12, 0)) == utc(2026, 11, 24, 7, 0)
    assert next_opening(day, zones, utc(2026, 11, 24, 7, 30)) is None
    assert next_opening(day, zones, utc(2026, 11, 24, 8, 0)) == utc(2026, 11, 25, 7, 0)
    # Open in Moscow alone is not enough.
    assert day.is_open(ZoneInfo("Europe/Moscow"), utc(2026, 11, 23, 12, 0))


def test_zones_that_never_open_together_use_the_fallback_zone() -> None:
    # New York and Tokyo are 14 h apart: a one-hour window never overlaps.
    short = window("09:00-10:00", fallback=BERLIN)
    now = utc(2026, 11, 23, 12, 0)  # 13:00 in Berlin
    assert next_opening(short, (NEW_YORK, TOKYO), now) == local(BERLIN, 2026, 11, 24, 9, 0)
    assert next_opening(short, (NEW_YORK, TOKYO), utc(2026, 11, 24, 8, 30)) is None


@pytest.mark.parametrize("zones", [("Etc/Unknown",), (), ("Mars/Olympus",)])
def test_unknown_zones_use_the_fallback_zone(zones: tuple[str, ...]) -> None:
    day = window("09:00-20:00", fallback=TOKYO)
    now = utc(2026, 11, 23, 12, 0)  # 21:00 in Tokyo, 13:00 in Berlin
    assert next_opening(day, zones, now) == local(TOKYO, 2026, 11, 24, 9, 0)
    assert next_opening(day, zones, utc(2026, 11, 24, 1, 0)) is None  # 10:00 in Tokyo


def test_openings_of_a_batch() -> None:
    day = window("09:00-20:00")
    now = utc(2026, 11, 23, 12, 0)  # Berlin 13:00, New York 07:00, Tokyo 21:00
    berlin, new_york, tokyo = "+4915120000001", "+12125551234", "+81312345678"
    assert openings(day, [berlin, new_york, tokyo, berlin], now) == [
        None,
        local(NEW_YORK, 2026, 11, 23, 9, 0),
        local(TOKYO, 2026, 11, 24, 9, 0),
        None,
    ]


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_opening(window("09:00-20:00"), (BERLIN,), datetime(2026, 11, 23, 12, 0))


# --------------------------------------------------------------------------- properties

ZONES = [
    BERLIN,
    NEW_YORK,
    TOKYO,
    "Europe/London",
    "Australia/Lord_Howe",  # 30-minute DST
    "Asia/Kathmandu",  # +05:45
    "America/Sao_Paulo",
    "America/St_Johns",  # -03:30 with DST
    "Pacific/Chatham",  # +12:45 with DST
    "Pacific/Kiritimati",  # +14
]
# Days around the DST changes of the zones above, where mistakes would hide.
DST_DAYS = [
    utc(2026, 3, 8),
    utc(2026, 3, 29),
    utc(2026, 4, 5),
    utc(2026, 9, 27),
    utc(2026, 10, 4),
    utc(2026, 10, 25),
    utc(2026, 11, 1),
]
minutes_of_day = st.integers(0, 24 * 60 - 1)
windows = st.tuples(minutes_of_day, minutes_of_day, st.sampled_from(ZONES)).filter(
    lambda w: w[0] != w[1]
)
zone_lists = st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True)
nows = st.one_of(
    st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
    st.builds(
        lambda day, minutes, seconds: day + timedelta(minutes=minutes, seconds=seconds),
        st.sampled_from(DST_DAYS),
        st.integers(-36 * 60, 36 * 60),
        st.floats(0, 59.999),
    ),
)


def _open_all(w: SendWindow, zones: Sequence[ZoneInfo], at: datetime) -> bool:
    return all(w.is_open(z, at) for z in zones)


def _brute_force(
    w: SendWindow, zones: Sequence[ZoneInfo], now: datetime, horizon: timedelta
) -> datetime | None:
    """Minute by minute: ``now`` itself, then every whole minute up to the horizon."""
    if _open_all(w, zones, now):
        return now
    at = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while at <= now + horizon:
        if _open_all(w, zones, at):
            return at
        at += timedelta(minutes=1)
    return None


@settings(max_examples=150, deadline=None)
@given(windows, zone_lists, nows)
def test_next_opening_is_the_earliest_minute_open_in_every_zone(
    spec: tuple[int, int, str], zone_names: list[str], now: datetime
) -> None:
    start, end, fallback = spec
    w = SendWindow(time(start // 60, start % 60), time(end // 60, end % 60), fallback)
    zones = [ZoneInfo(z) for z in zone_names]
    expected = _brute_force(w, zones, now, HORIZON)
    if expected is None:  # never together within 48 h: the fallback zone decides
        expected = _brute_force(w, [ZoneInfo(fallback)], now, timedelta(days=2))
        assert expected is not None
    found = next_opening(w, zone_names, now)
    assert found == (None if expected == now else expected)
    if found is not None:
        assert found.tzinfo is UTC and found.second == 0 and found > now


# --------------------------------------------------------------------------- dispatch


def test_closed_windows_never_reach_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    # Berlin 13:00 (open), New York 07:00 and Tokyo 21:00 (closed).
    now = utc(2026, 11, 23, 12, 0)

    class Clock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Clock:
            return cls.fromtimestamp(now.timestamp(), UTC)

    monkeypatch.setattr(send, "datetime", Clock)
    gate, transport = RecordingGate(), AcceptAll()
    contacts = claimed("+4915120000001", "+12125551234", "+81312345678")
    attempts, _ = send_batch(plan(window=window("09:00-20:00")), contacts, gate, transport)
    assert transport.sent == ["+4915120000001"]
    assert gate.groups == [1]
    assert [a.opens_at for a in attempts] == [
        None,
        local(NEW_YORK, 2026, 11, 23, 9, 0),
        local(TOKYO, 2026, 11, 24, 9, 0),
    ]
    assert [a.result is None for a in attempts] == [False, True, True]
    recorded = [recorded_outcome(a) for a in attempts[1:]]
    assert all(r.released and r.state is ContactState.INITIAL for r in recorded)
    assert [r.not_before for r in recorded] == [a.opens_at for a in attempts[1:]]


def test_without_a_window_dispatch_never_looks_at_zones(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lookup(*args: object) -> None:
        raise AssertionError("no window: no zone lookup on the hot path")

    monkeypatch.setattr(send, "openings", no_lookup)
    transport = AcceptAll()
    contacts = claimed("+12125551234", "+81312345678")
    attempts, _ = send_batch(plan(), contacts, RecordingGate(), transport)
    assert transport.sent == ["+12125551234", "+81312345678"]
    assert all(a.opens_at is None and a.result is not None for a in attempts)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(60, 4 * 60),  # starts in the night hours that DST skips or repeats
    st.integers(1, 20 * 60),
    st.sampled_from([BERLIN, NEW_YORK, "Australia/Lord_Howe", "America/St_Johns"]),
    st.sampled_from(DST_DAYS),
    st.integers(-24 * 60, 24 * 60),
)
def test_next_opening_on_dst_nights(
    start: int, length: int, zone: str, day: datetime, minutes: int
) -> None:
    end = (start + length) % (24 * 60)
    w = SendWindow(time(start // 60, start % 60), time(end // 60, end % 60), TOKYO)
    now = day + timedelta(minutes=minutes)
    expected = _brute_force(w, [ZoneInfo(zone)], now, HORIZON)
    assert expected is not None
    assert next_opening(w, (zone,), now) == (None if expected == now else expected)


# --------------------------------------------------------------------------- the API body


def create(**fields: object) -> CampaignCreate:
    return CampaignCreate.model_validate({"name": "x", "region": "DE", **fields})


def test_the_campaign_body_takes_a_window_and_its_zone() -> None:
    body = create(send_window=" 9:00 - 20:00", send_window_tz="Europe/Berlin")
    assert body.send_window == "09:00-20:00"  # normalised
    assert body.window() == SendWindow(time(9), time(20), BERLIN)
    assert create().window() is None  # no window: today's behaviour


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"send_window": "9-20", "send_window_tz": BERLIN}, "send_window", "not HH:MM-HH:MM"),
        ({"send_window": "09:00-09:00", "send_window_tz": BERLIN}, "send_window", "equal"),
        ({"send_window": "09:00-20:00"}, "send_window_tz", "needs send_window_tz"),
        ({"send_window": "09:00-20:00", "send_window_tz": "Berlin"}, "send_window_tz", "unknown"),
        ({"send_window_tz": BERLIN}, "send_window_tz", "only used with a send_window"),
    ],
)
def test_the_campaign_body_refuses_a_bad_window(
    fields: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        create(**fields)
    errors = refused.value.errors()
    assert len(errors) == 1  # one clear message, not a cascade
    assert errors[0]["loc"] == (field,) and message in errors[0]["msg"]
