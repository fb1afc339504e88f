"""The recipient-local send window on real Postgres and Redis against the simulator.

The window is chosen from the wall clock at the start of each test (two hours around Berlin's
local time now), so the same recipients are open or closed whatever time the suite runs:
Berlin open; New York (5-6 h behind) and Tokyo (7-8 h ahead) closed; a Russian mobile,
whose sixteen candidate zones never share a two-hour window, follows the fallback zone
(Berlin): open.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, text

from campaigns.cli.main import main
from campaigns.dev.simulator.runner import RunningSimulator
from campaigns.domain import send_window as sw
from campaigns.runtime.stores import resolve
from campaigns.services import admin, uploads
from campaigns.services import campaigns as campaign_service
from campaigns.services.dispatch import send
from campaigns.services.dispatch.plan import load_plan
from campaigns.services.dispatch.tick import complete_finished, running_due
from schemas.api import CampaignCreate
from tests.integration.dispatch_support import (
    SENDER,
    SendPorts,
    chain,
    contact_rows,
    csv_for,
    phone,
    send_ports,
    sync_flags,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
BERLIN_NUMBERS = [phone(i) for i in range(3)]
RUSSIAN_MOBILE = "+79161234512"
NEW_YORK_NUMBERS = ["+12125550101", "+12125550102"]
TOKYO_NUMBERS = ["+81312345610", "+81312345611"]
OPEN = [*BERLIN_NUMBERS, RUSSIAN_MOBILE]
CLOSED = [*NEW_YORK_NUMBERS, *TOKYO_NUMBERS]


@pytest.fixture
def ports(sim: RunningSimulator) -> Iterator[SendPorts]:
    with send_ports(sim, timeout_s=1.0) as p:
        yield p


def window_around_berlin_now(now: datetime) -> str:
    """Two hours around Berlin's local time now (wrapping midnight if need be)."""
    berlin = now.astimezone(BERLIN).replace(second=0, microsecond=0, tzinfo=None)
    start, end = berlin - timedelta(hours=1), berlin + timedelta(hours=1)
    return sw.format_window(start.time(), end.time())


def first_open_minute(window: sw.SendWindow, zone: ZoneInfo, now: datetime) -> datetime:
    """Minute by minute, independent of ``next_opening``: when the zone's window opens."""
    at = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while not window.is_open(zone, at):
        at += timedelta(minutes=1)
        assert at < now + timedelta(days=2)
    return at


def campaign_with_window(engine: Engine, numbers: Sequence[str], send_window: str) -> int:
    body = CampaignCreate(
        name="window",
        template="bf_offer",
        region="DE",
        body_variables=["name"],
        phone_number_id=SENDER,
        rate_per_s=Decimal(1000),
        send_window=send_window,
        send_window_tz="Europe/Berlin",
    )
    campaign_id = campaign_service.create_campaign(engine, body).id
    spooled = uploads.spool_upload(
        iter([csv_for(numbers)]), resolve().settings.spool_dir, max_bytes=50_000_000
    )
    upload = uploads.register_upload(engine, campaign_id, spooled, filename="w.csv")
    done = uploads.run_ingest(
        engine, upload.id, max_rows=1_000_000, chunk_rows=10_000, parse_workers=1
    )
    assert done.valid == len(numbers), done
    return campaign_id


def by_phone(engine: Engine, campaign_id: int) -> dict[str, dict[str, Any]]:
    return {str(r["phone_e164"]): r for r in contact_rows(engine, campaign_id)}


def campaign_row(engine: Engine, campaign_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT status, status_reason FROM campaigns WHERE id = :c"), {"c": campaign_id}
        ).one()


def accepted(sim: RunningSimulator) -> set[str]:
    return {f"+{digits.lstrip('+')}" for digits in sim.stats()["accepted_by_recipient"]}


class Started:
    """A campaign with open and closed recipients, started, one New York contact a retry."""

    def __init__(self, db: Engine) -> None:
        self.now = datetime.now(UTC)
        self.window_text = window_around_berlin_now(self.now)
        self.window = sw.SendWindow(*sw.parse_window(self.window_text), "Europe/Berlin")
        # The premise, checked rather than assumed: who is open now.
        assert self.window.is_open(BERLIN, self.now)
        assert not self.window.is_open(NEW_YORK, self.now)
        assert not self.window.is_open(TOKYO, self.now)
        russian = [ZoneInfo(z) for z in sw.zones_for_number(RUSSIAN_MOBILE)]
        offsets = [self.now.astimezone(z).utcoffset() or timedelta() for z in russian]
        assert max(offsets) - min(offsets) > timedelta(hours=4)  # never awake together
        self.opens = {
            NEW_YORK: first_open_minute(self.window, NEW_YORK, self.now),
            TOKYO: first_open_minute(self.window, TOKYO, self.now),
        }
        self.campaign_id = campaign_with_window(db, OPEN + CLOSED, self.window_text)
        with db.begin() as conn:  # as if its first attempt had met a 5xx
            conn.execute(
                text(
                    "UPDATE contacts SET state = 'retry_scheduled', attempts = 1 "
                    "WHERE campaign_id = :c AND phone_e164 = :p"
                ),
                {"c": self.campaign_id, "p": NEW_YORK_NUMBERS[1]},
            )
        admin.start_campaign(db, sync_flags(), self.campaign_id)

    def opening_of(self, e164: str) -> datetime:
        return self.opens[NEW_YORK if e164 in NEW_YORK_NUMBERS else TOKYO]


def test_closed_windows_wait_unsent_and_uncounted(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    started = Started(db)
    campaign_id = started.campaign_id

    assert not chain(db, campaign_id, ports)  # nothing more is due: the chain stops

    assert accepted(sim) == set(OPEN)  # exactly the open ones, once each
    assert sim.stats()["requests_total"] == len(OPEN)
    rows = by_phone(db, campaign_id)
    assert {p: rows[p]["state"] for p in OPEN} == dict.fromkeys(OPEN, "sent")
    expected = {p: ("initial", 0) for p in CLOSED} | {NEW_YORK_NUMBERS[1]: ("retry_scheduled", 1)}
    assert {p: (rows[p]["state"], rows[p]["attempts"]) for p in CLOSED} == expected
    for p in CLOSED:
        assert rows[p]["next_attempt_at"] == started.opening_of(p), p
        assert rows[p]["lease_expires_at"] is None
    first = min(started.opens.values())
    assert tuple(campaign_row(db, campaign_id)) == (
        "running",
        f"waiting for the send window: next opening at {first.isoformat(timespec='seconds')}",
    )
    with db.connect() as conn:
        details = conn.execute(
            text(
                "SELECT detail FROM contact_events e JOIN contacts c ON c.id = e.contact_id "
                "WHERE c.phone_e164 = :p AND e.from_state = 'in_progress'"
            ),
            {"p": TOKYO_NUMBERS[0]},
        ).scalars()
        assert list(details) == [
            "released unsent: waiting for the send window: next opening at "
            + started.opens[TOKYO].isoformat(timespec="seconds")
        ]

    # Nothing is due until the first opening: no chain, no claim, no completion.
    assert campaign_id not in [c for c, _, _ in running_due(db, SENDER)]
    assert not chain(db, campaign_id, ports)
    assert sim.stats()["requests_total"] == len(OPEN)
    assert campaign_id not in complete_finished(db)
    assert by_phone(db, campaign_id)[TOKYO_NUMBERS[0]]["attempts"] == 0
    assert campaign_row(db, campaign_id).status == "running"


def test_a_window_that_opens_sends_and_clears_the_wait(
    db: Engine, sim: RunningSimulator, ports: SendPorts, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = Started(db)
    campaign_id = started.campaign_id
    assert not chain(db, campaign_id, ports)
    assert str(campaign_row(db, campaign_id).status_reason).startswith("waiting for the send")

    # Tokyo's opening arrives: its contacts fall due and dispatch sees Tokyo's clock then.
    tokyo_opens = started.opens[TOKYO]
    monkeypatch.setattr(
        send, "openings", lambda window, phones, now: sw.openings(window, phones, tokyo_opens)
    )
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE contacts SET next_attempt_at = now() "
                "WHERE campaign_id = :c AND phone_e164 = ANY(:p)"
            ),
            {"c": campaign_id, "p": TOKYO_NUMBERS},
        )
    assert not chain(db, campaign_id, ports)

    assert accepted(sim) == set(OPEN + TOKYO_NUMBERS)
    rows = by_phone(db, campaign_id)
    assert {p: (rows[p]["state"], rows[p]["attempts"]) for p in TOKYO_NUMBERS} == dict.fromkeys(
        TOKYO_NUMBERS, ("sent", 1)
    )
    assert {rows[p]["state"] for p in NEW_YORK_NUMBERS} == {"initial", "retry_scheduled"}
    assert tuple(campaign_row(db, campaign_id)) == ("running", None)  # sending again


def test_no_window_is_todays_behaviour(db: Engine, sim: RunningSimulator, ports: SendPorts) -> None:
    body = CampaignCreate(name="no window", template="bf_offer", region="DE")
    campaign = campaign_service.create_campaign(db, body)
    assert (campaign.send_window, campaign.send_window_tz) == (None, None)
    plan = load_plan(db, campaign.id, SENDER)
    assert plan is not None and plan.window is None


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def campaign_count(db: Engine) -> int:
    with db.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM campaigns")).scalar_one())


def test_cli_creates_a_campaign_with_a_window(
    db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, campaign, _ = run_cli(
        capsys,
        *("campaign", "create", "--name", "w", "--region", "DE", "--json"),
        *("--send-window", "22:00-06:00", "--send-window-tz", "Europe/Berlin"),
    )
    assert code == 0
    assert (campaign["send_window"], campaign["send_window_tz"]) == ("22:00-06:00", "Europe/Berlin")
    plan = load_plan(db, campaign["id"], SENDER)
    assert plan is not None
    assert plan.window == sw.SendWindow(time(22), time(6), "Europe/Berlin")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--send-window", "9-20", "--send-window-tz", "Europe/Berlin"), "not HH:MM-HH:MM"),
        (("--send-window", "09:00-09:00", "--send-window-tz", "UTC"), "start and end are equal"),
        (("--send-window", "09:00-20:00", "--send-window-tz", "Mars/X"), "unknown time zone"),
        (("--send-window", "09:00-20:00"), "send_window needs send_window_tz"),
    ],
)
def test_cli_refuses_a_bad_window_and_stores_nothing(
    db: Engine, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], message: str
) -> None:
    before = campaign_count(db)
    code, out, err = run_cli(
        capsys, "campaign", "create", "--name", "w", "--region", "DE", "--json", *flags
    )
    assert code == 2
    assert out["error"]["code"] == "invalid_campaign" and message in out["error"]["message"]
    assert err == ""  # with --json the refusal is the one object on stdout
    assert campaign_count(db) == before


def test_http_takes_the_window_and_refuses_a_bad_one(db: Engine, api: Any) -> None:
    made = api.post(
        "/campaigns",
        json={
            "name": "w",
            "region": "DE",
            "send_window": "09:00-20:00",
            "send_window_tz": "America/New_York",
        },
    )
    assert made.status_code == 201, made.text
    assert (made.json()["send_window"], made.json()["send_window_tz"]) == (
        "09:00-20:00",
        "America/New_York",
    )
    assert api.get(f"/campaigns/{made.json()['id']}").json()["send_window"] == "09:00-20:00"

    before = campaign_count(db)
    for body, message in [
        ({"send_window": "09:00-20:00"}, "send_window needs send_window_tz"),
        ({"send_window": "20:00-20:00", "send_window_tz": "UTC"}, "start and end are equal"),
        ({"send_window": "09:00-20:00", "send_window_tz": "Nowhere"}, "unknown time zone"),
        ({"send_window": "morning", "send_window_tz": "UTC"}, "not HH:MM-HH:MM"),
    ]:
        refused = api.post("/campaigns", json={"name": "w", "region": "DE", **body})
        assert refused.status_code == 422, body
        assert message in refused.text, refused.text
    assert campaign_count(db) == before


def test_the_database_refuses_half_a_window(db: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError, match="ck_campaigns_send_window"), db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO campaigns (name, default_region, send_window_start, send_window_end) "
                "VALUES ('x', 'DE', '09:00', '20:00')"
            )
        )
