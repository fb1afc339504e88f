"""The operator console in headless Chromium (Debian's), against the real app under uvicorn
in a thread (same test database and Redis) and an in-thread ingest worker.

- the New campaign form shows every problem at once, next to its field, and sends nothing
  twice; the API's 422 messages land next to the fields they name;
- axe-core finds no serious or critical violation on the list, campaign, upload and contact
  pages (the upload page: the campaign page with a preview, then with a report);
- a token revoked while a page is open brings back the token prompt with a message;
- an upload cut by a closed tab (or stopped) leaves nothing: no upload, no spooled file
  (through a slow relay, so that the tab closes part-way);
- an upload whose file reached the server goes on there when the tab closes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from campaigns.runtime.stores import resolve
from campaigns.services import tokens
from tests.conftest import API_TOKEN
from tests.e2e.console_support import (
    ConsolePage,
    SlowLink,
    assert_accessible,
    axe_violations,
    csv_file,
    screenshot,
    unreachable_by_tab,
)
from tests.e2e.test_dashboard_browser import chromium, server
from tests.fixtures.processes import wait_for
from tests.integration.conftest import ingest_worker
from tests.integration.test_api import wait_for_upload

__all__ = ["ingest_worker", "server"]

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One browser for the module's tests; each test opens its own page."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def console(browser: Any) -> Iterator[ConsolePage]:
    page = ConsolePage(browser)
    yield page
    page.page.close()


def _create(base: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "Console", "template": "spring_offer", "region": "DE", **fields}
    response = httpx.post(f"{base}/campaigns", headers=AUTH, json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _stored(db: Engine) -> tuple[int, int]:
    with db.connect() as conn:
        return (
            conn.execute(text("SELECT count(*) FROM uploads")).scalar_one(),
            conn.execute(text("SELECT count(*) FROM contacts")).scalar_one(),
        )


def _api_problems_next_to_their_fields(page: Any, server: str, posts: list[str]) -> None:
    from playwright.sync_api import expect

    summary = page.locator("#create-summary")
    # What only the API knows: its 422 message, each part next to its field.
    page.get_by_label("Name").fill("Spring offer")
    page.get_by_label("Region").fill("DE")
    page.get_by_label("Rate").fill("1500")
    page.get_by_label("Rate").fill("20")
    page.get_by_label("Send window").fill("09:00-20:00")
    page.get_by_label("Time zone of the window").fill("Mars/Olympus")
    page.get_by_label("Variables").fill("First Name")
    page.get_by_label("Keyed parameters").check()
    page.get_by_role("button", name="Create campaign").click()
    expect(page.locator("#f-variables-error")).to_contain_text("lowercase letters")
    page.get_by_label("Variables").fill("first_name")
    page.get_by_role("button", name="Create campaign").click()
    expect(page.locator("#f-zone-error")).to_contain_text("Mars/Olympus", timeout=10_000)
    expect(summary).to_contain_text("Time zone of the window")
    assert len(posts) == 1
    assert httpx.get(f"{server}/campaigns", headers=AUTH).json() == []


def test_the_form_shows_every_problem_at_once_and_sends_once(
    server: str, console: ConsolePage, db: Engine
) -> None:
    from playwright.sync_api import expect

    page = console.page
    posts: list[str] = []
    page.on(
        "request",
        lambda r: posts.append(r.url) if r.method == "POST" and r.url.endswith("/campaigns") else 0,
    )
    page.goto(f"{server}/dashboard#token={API_TOKEN}")
    expect(page.get_by_role("button", name="Create campaign")).to_be_visible(timeout=15_000)
    missed = unreachable_by_tab(page)
    assert missed == [], missed

    # Missing and invalid fields: every problem at once, nothing sent.
    page.get_by_label("Region").fill("Germany")
    page.get_by_label("Rate").fill("0")
    page.get_by_label("Send window").fill("9-5")
    page.get_by_role("button", name="Create campaign").click()
    summary = page.locator("#create-summary")
    expect(summary).to_be_visible()
    expect(summary.locator("li")).to_have_count(5)
    for field, words in [
        ("f-name", "enter a name"),
        ("f-region", "two-letter region"),
        ("f-rate", "above 0"),
        ("f-window", "HH:MM-HH:MM"),
        ("f-zone", "zone of the window"),
    ]:
        expect(page.locator(f"#{field}-error")).to_contain_text(words)
        expect(page.locator(f"#{field}")).to_have_attribute("aria-invalid", "true")
    assert posts == []
    expect(summary).to_be_focused()
    screenshot(page, "console_form", "problems")

    _api_problems_next_to_their_fields(page, server, posts)

    # Fixed: Enter twice sends it once and lands on the campaign's page.
    page.get_by_label("Time zone of the window").fill("Europe/Berlin")
    page.get_by_label("Time zone of the window").press("Enter")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/dashboard/campaigns/\d+$"), timeout=10_000)
    expect(page.locator("#c-name")).to_have_text("Spring offer", timeout=10_000)
    assert len(posts) == 2
    [created] = httpx.get(f"{server}/campaigns", headers=AUTH).json()
    assert (created["send_window"], created["send_window_tz"]) == ("09:00-20:00", "Europe/Berlin")
    assert (created["body_variables"], created["named_variables"]) == (["first_name"], True)
    assert created["rate_per_s"] == 20
    assert console.errors == []


def test_pages_have_no_serious_or_critical_axe_violation(
    server: str, console: ConsolePage, db: Engine, ingest_worker: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = console.page
    campaign = _create(server, body_variables=["first_name"])
    page.goto(f"{server}/dashboard#token={API_TOKEN}")
    expect(page.locator("#campaigns-table tbody tr")).to_have_count(1, timeout=15_000)
    assert_accessible(page, "the campaigns list and the New campaign form")
    page.get_by_role("button", name="Create campaign").click()  # with its problems shown
    expect(page.locator("#create-summary")).to_be_visible()
    assert_accessible(page, "the New campaign form with its problems")

    page.goto(f"{server}/dashboard/campaigns/{campaign['id']}")
    expect(page.locator("#c-status")).to_have_text("draft", timeout=15_000)
    assert_accessible(page, "the campaign page")

    data = tmp_path / "guests.csv"
    data.write_bytes(csv_file(30, bad=3))
    page.get_by_label("CSV file").set_input_files(str(data))
    expect(page.locator("#preview-rows tbody tr")).to_have_count(10, timeout=10_000)
    assert_accessible(page, "the upload page with a preview")
    page.get_by_role("button", name="Upload").click()
    report = page.locator("#report")
    expect(report).to_be_visible(timeout=30_000)
    expect(page.locator("#report-rejected tbody tr")).to_have_count(3)
    assert_accessible(page, "the upload page with a report")
    screenshot(page, "console_axe", "campaign-report")

    person = "+4915123000001"
    page.goto(f"{server}/dashboard/contacts#phone={person.replace('+', '%2B')}")
    expect(page.locator("#contact-title")).to_have_text(person, timeout=15_000)
    assert_accessible(page, "the contact page")
    # The check can fail: a button without a name is a critical violation.
    page.evaluate("document.querySelector('main').append(document.createElement('button'))")
    assert [v["id"] for v in axe_violations(page)] == ["button-name"]
    assert console.errors == []


def test_a_revoked_token_brings_back_the_prompt(
    server: str, console: ConsolePage, db: Engine
) -> None:
    from playwright.sync_api import expect

    page = console.page
    campaign = _create(server)
    issued = tokens.create_api_token(db, "browser-session")
    page.goto(f"{server}/dashboard/campaigns/{campaign['id']}#token={issued.token}")
    expect(page.locator("#c-status")).to_have_text("draft", timeout=15_000)
    expect(page.locator("#token-view")).to_be_hidden()

    tokens.revoke_token(db, "browser-session")
    message = page.locator("#token-message")
    expect(message).to_contain_text("revoked or has expired", timeout=10_000)
    expect(page.get_by_label("API token")).to_be_focused()
    expect(page.locator("#campaign-view")).to_be_hidden()
    assert page.evaluate("localStorage.getItem('wa-campaigns-token')") is None
    screenshot(page, "console_token", "revoked")

    # A good token, typed in: the page comes back and polls again.
    page.get_by_label("API token").fill(API_TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#campaign-view")).to_be_visible()
    expect(page.locator("#live")).to_contain_text("live", timeout=10_000)
    expect(message).to_be_hidden()
    assert console.errors == [] or all("401" in e for e in console.errors), console.errors


@pytest.mark.parametrize("how", ["closed tab", "stop button"])
def test_an_interrupted_upload_stores_nothing(
    server: str, browser: Any, db: Engine, tmp_path: Path, how: str
) -> None:
    from playwright.sync_api import expect

    campaign = _create(server, body_variables=["first_name"])
    link = SlowLink(int(server.rsplit(":", 1)[1]), 1024 * 1024)
    console = ConsolePage(browser)
    page = console.page
    page.goto(f"{link.url}/dashboard/campaigns/{campaign['id']}#token={API_TOKEN}")
    expect(page.locator("#c-status")).to_have_text("draft", timeout=15_000)
    data = tmp_path / "big.csv"
    # ~11 MB: more than the socket buffers take in at once (4 MiB at most on Linux), and
    # about 11 s at 1 MiB/s. What the browser had buffered still drains when it closes.
    data.write_bytes(csv_file(40_000, pad=250))
    size = data.stat().st_size
    spool = resolve().settings.spool_dir
    before = set(spool.glob("*"))
    page.get_by_label("CSV file").set_input_files(str(data))
    expect(page.locator("#preview-rows tbody tr")).to_have_count(10, timeout=10_000)
    page.get_by_role("button", name="Upload").click()
    page.wait_for_function(
        "() => { const b = document.getElementById('bytes-progress'); "
        "return b.value > 64 * 1024 && b.value < b.max; }",
        timeout=15_000,
    )
    sent = float(page.evaluate("document.getElementById('bytes-progress').value"))
    assert 0 < sent < size
    # The server is part-way through: its spooled part is on disk.
    wait_for(lambda: bool(set(spool.glob("*")) - before), timeout=10, what="a spooled part")
    if how == "stop button":
        page.get_by_role("button", name="Stop transfer").click()
        expect(page.locator("#upload-message")).to_contain_text("Nothing was stored")
        expect(page.get_by_role("button", name="Upload")).to_be_enabled()
    page.close()
    try:
        wait_for(
            lambda: set(spool.glob("*")) <= before,
            timeout=15,
            what="the spooled part of the cut upload to be deleted",
        )
    finally:
        link.close()
    assert httpx.get(f"{server}/campaigns/{campaign['id']}/uploads", headers=AUTH).json() == []
    assert _stored(db) == (0, 0)
    assert console.errors == []


def test_an_upload_goes_on_on_the_server_when_the_tab_closes(
    server: str, browser: Any, db: Engine, ingest_worker: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    campaign = _create(server, body_variables=["first_name"])
    console = ConsolePage(browser)
    page = console.page
    page.goto(f"{server}/dashboard/campaigns/{campaign['id']}#token={API_TOKEN}")
    expect(page.locator("#c-status")).to_have_text("draft", timeout=15_000)
    rows = 60_000  # a few seconds of the ingest worker's reading
    data = tmp_path / "many.csv"
    data.write_bytes(csv_file(rows, bad=1))
    page.get_by_label("CSV file").set_input_files(str(data))
    expect(page.locator("#preview-rows tbody tr")).to_have_count(10, timeout=10_000)
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/uploads?" in r.url, timeout=30_000
    ) as answer:
        page.get_by_role("button", name="Upload").click()
    assert answer.value.status == 202
    [accepted] = httpx.get(f"{server}/campaigns/{campaign['id']}/uploads", headers=AUTH).json()
    upload_id = accepted["id"]
    # The file is with the server: the tab closes while the worker is still reading it.
    page.close()
    at_close = httpx.get(f"{server}/uploads/{upload_id}", headers=AUTH).json()
    assert at_close["status"] in ("received", "processing"), at_close
    assert at_close["valid"] < rows

    final = wait_for_upload(db, upload_id)
    assert (final["status"], final["valid"], final["invalid"]) == ("completed", rows, 1)
    assert _stored(db) == (1, rows + 1)
    assert console.errors == []


def _schedule_then_cancel(console: ConsolePage, server: str, campaign_id: int) -> None:
    from playwright.sync_api import expect

    page = console.page
    # Start at a time, then cancel: each confirmed first.
    page.get_by_label("Start at (optional)").fill("2031-05-04T12:00")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#c-status")).to_have_text("scheduled", timeout=10_000)
    assert console.dialogs[-1].startswith('Schedule campaign "Console" for ')
    scheduled = httpx.get(f"{server}/campaigns/{campaign_id}", headers=AUTH).json()
    assert scheduled["scheduled_at"].startswith("2031-05-04")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#c-status")).to_have_text("cancelled", timeout=10_000)
    assert "cannot be undone" in console.dialogs[-1]


def test_a_refused_file_a_chosen_phone_column_and_the_keyboard(
    server: str, console: ConsolePage, db: Engine, ingest_worker: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = console.page
    campaign = _create(server, body_variables=["first_name"])
    page.goto(f"{server}/dashboard/campaigns/{campaign['id']}#token={API_TOKEN}")
    expect(page.locator("#c-status")).to_have_text("draft", timeout=15_000)

    # A file without any phone column: the preview says so; the server refuses it (400).
    refused = tmp_path / "people.csv"
    refused.write_bytes(b"name,email\nx,y\n")
    page.get_by_label("CSV file").set_input_files(str(refused))
    expect(page.locator("#preview-problems")).to_be_visible(timeout=10_000)
    expect(page.locator("#p-phone")).to_contain_text("not found")
    page.get_by_role("button", name="Upload").click()
    message = page.locator("#upload-message")
    expect(message).to_contain_text("The file was refused", timeout=10_000)
    expect(message).to_contain_text("Nothing was stored")
    assert _stored(db) == (0, 0)

    # Its phone column under a name detection does not know: the operator picks it.
    chosen = tmp_path / "guests.csv"
    chosen.write_bytes(b"kontakt,first_name\n+4915123000001,Anna\nnope,Bob\n+4915123000002,\n")
    page.get_by_label("CSV file").set_input_files(str(chosen))
    expect(page.locator("#p-phone")).to_contain_text("not found", timeout=10_000)
    page.get_by_label("Column with the phone numbers").select_option("kontakt")
    expect(page.locator("#p-phone")).to_have_text("kontakt", timeout=10_000)
    expect(page.locator("#preview-rows tbody tr.bad")).to_have_count(2)
    missed = unreachable_by_tab(page)
    assert missed == [], missed  # every control of the page, by Tab alone
    page.get_by_role("button", name="Upload").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#report")).to_be_visible(timeout=30_000)
    expect(page.locator("#r-valid")).to_have_text("1")
    expect(page.locator("#r-invalid")).to_have_text("2")

    # Every rejected row of this upload, downloaded with the token (not a bare link).
    with page.expect_download() as download:
        page.get_by_role("button", name=re.compile("Download every rejected row")).click()
    rows = Path(download.value.path()).read_text().strip().splitlines()
    assert len(rows) == 3 and "nope" in rows[1] and "+4915123000002" in rows[2], rows
    screenshot(page, "console_upload", "chosen-column-report")
    _schedule_then_cancel(console, server, campaign["id"])
    # The keyboard check can fail: a button taken out of the tab order is reported.
    page.evaluate(
        "document.querySelector('main').append(Object.assign(document.createElement('button'),"
        " {id: 'mouse-only', tabIndex: -1, textContent: 'Mouse only'}))"
    )
    assert unreachable_by_tab(page) == ["mouse-only"]
    assert console.errors == []
