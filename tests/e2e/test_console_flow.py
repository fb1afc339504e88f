"""The operator console end to end in headless Chromium, driven by the accessible names an
operator sees, against the real stack: the API process, a worker process (ingest and
dispatch, with the beat tick), the webhooks worker and the simulator.

One campaign goes the whole way: created through the form, a file with good and bad rows
previewed and uploaded (bytes sent, then the server's rows, then the report), one contact
removed while draft, started, paused, resumed, its counts followed until it completes; then
a retry of the failed (the unavailable ones are skipped, with their count) and the person
lookup's block, unblock, opt-out and removal. A screenshot of each page goes to ``tests/e2e/artifacts``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from tests.conftest import API_TOKEN
from tests.e2e.console_support import (
    ConsolePage,
    assert_accessible,
    csv_file,
    screenshot,
    unreachable_by_tab,
)
from tests.e2e.test_dashboard_browser import browser
from tests.fixtures.live import LiveStack
from tests.fixtures.processes import start_worker

__all__ = ["browser"]

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SHOTS = "console_flow"
GOOD, BAD = 30, 3  # +4915123000000 .. 029, then three rows that are no phone number
REMOVED = "+4915123000029"
UNAVAILABLE = ("+4915123000000", "+4915123000001", "+4915123000002")  # the simulator: 00-02


@pytest.fixture
def console(browser: Any) -> Iterator[ConsolePage]:
    page = ConsolePage(browser)
    yield page
    page.page.close()


def _count(page: Any, state: str) -> int:
    cell = page.locator(f'#states-table tr[data-state="{state}"] td.num').first
    return int((cell.text_content() or "0").replace(",", ""))


def _create_through_the_form(page: Any, base: str) -> int:
    from playwright.sync_api import expect

    page.goto(f"{base}/dashboard#token={API_TOKEN}")
    expect(page.get_by_role("button", name="Create campaign")).to_be_visible(timeout=15_000)
    page.get_by_label("Name", exact=True).fill("Console flow")
    page.get_by_label("Template", exact=True).fill("spring_offer")
    page.get_by_label("Language", exact=True).fill("en")
    page.get_by_label("Region", exact=True).fill("DE")
    page.get_by_label("Variables", exact=True).fill("first_name")
    page.get_by_label("Rate", exact=True).fill("5")
    screenshot(page, SHOTS, "1-list-and-form")
    page.get_by_role("button", name="Create campaign").click()
    page.wait_for_url(re.compile(r"/dashboard/campaigns/\d+$"), timeout=15_000)
    expect(page.locator("#c-status")).to_have_text("draft", timeout=15_000)
    return int(page.url.rsplit("/", 1)[1])


def _upload_and_read_the_report(page: Any, data: Path) -> None:
    from playwright.sync_api import expect

    page.get_by_label("CSV file").set_input_files(str(data))
    expect(page.locator("#preview-rows tbody tr")).to_have_count(
        10, timeout=10_000
    )  # the first rows
    expect(page.locator("#p-phone")).to_have_text("phone")
    expect(page.locator("#p-delimiter")).to_have_text("comma (,)")
    expect(page.locator("#variables-table")).to_contain_text("first_name")
    screenshot(page, SHOTS, "2-upload-preview")
    page.get_by_role("button", name="Upload").click()
    # The bytes sent (all of them), then the server's own counts, then the report.
    size = data.stat().st_size
    expect(page.locator("#bytes-progress")).to_have_attribute("value", str(size))
    expect(page.locator("#u-counts")).to_contain_text(
        f"Rows read {GOOD + BAD} · valid {GOOD} · invalid {BAD}", timeout=30_000
    )
    report = page.locator("#report")
    expect(report).to_be_visible(timeout=30_000)
    expect(page.locator("#r-valid")).to_have_text(str(GOOD))
    expect(page.locator("#r-invalid")).to_have_text(str(BAD))
    expect(page.locator('#report-reasons tr[data-reason="not_a_number"] td.num')).to_have_text(
        str(BAD)
    )
    lines = page.locator("#report-rejected tbody tr td.num").all_text_contents()
    assert lines == [str(n) for n in range(GOOD + 2, GOOD + BAD + 2)]  # header is line 1
    expect(
        page.get_by_role("button", name=re.compile("Download every rejected row"))
    ).to_be_visible()
    assert_accessible(page, "the campaign page with its upload report")
    screenshot(page, SHOTS, "3-upload-report")


def _remove_one_contact(page: Any) -> None:
    from playwright.sync_api import expect

    page.get_by_label("Phone", exact=True).fill(REMOVED)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#contacts-table tbody tr")).to_have_count(1, timeout=10_000)
    page.get_by_label(re.compile("^Select line")).check()
    page.get_by_role("button", name="Remove selected (1)").click()
    result = page.locator('#remove-table tr[data-result="SUCCESS"]')
    expect(result).to_have_count(1)
    expect(result).to_contain_text(REMOVED)
    expect(page.locator("#contacts-message")).to_contain_text("1 removed")


def _start_pause_resume(page: Any, console: ConsolePage) -> None:
    from playwright.sync_api import expect

    status = page.locator("#c-status")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(status).to_have_text("running", timeout=10_000)
    page.wait_for_function(
        "() => Number(document.querySelector('#states-table tr[data-state=\"delivered\"] td.num')"
        '.textContent) + Number(document.querySelector(\'#states-table tr[data-state="sent"] '
        "td.num').textContent) + Number(document.querySelector('#states-table "
        'tr[data-state="read"] td.num\').textContent) > 0',
        timeout=20_000,
    )
    screenshot(page, SHOTS, "4-running")
    page.get_by_role("button", name="Pause").click()
    expect(status).to_have_text("paused", timeout=10_000)
    expect(page.get_by_role("button", name="Resume")).to_be_enabled()
    waiting = sum(_count(page, s) for s in ("initial", "in_progress", "retry_scheduled"))
    assert waiting > 0, "the campaign finished before it could be paused"
    screenshot(page, SHOTS, "5-paused")
    page.get_by_role("button", name="Resume").click()
    expect(status).to_have_text("running", timeout=10_000)
    assert [d.split(" campaign")[0] for d in console.dialogs[-3:]] == ["Start", "Pause", "Resume"]


def _follow_to_completion(page: Any) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#c-status")).to_have_text("completed", timeout=90_000)
    # The counts the page shows, after the webhooks settled: every live contact sent once.
    page.wait_for_function(
        "() => Number(document.querySelector('#states-table tr[data-state=\"sent\"] td.num')"
        ".textContent) === 0",
        timeout=30_000,
    )
    settled = _count(page, "delivered") + _count(page, "read")
    failed = _count(page, "sending_failed")
    assert (settled, failed) == (GOOD - 1 - len(UNAVAILABLE), len(UNAVAILABLE))
    assert (_count(page, "removed"), _count(page, "invalid_record")) == (1, BAD)
    expect(page.locator("#k-progress")).to_have_text("100.0%")
    # A completed campaign's contacts stay: its Remove button follows the status.
    expect(page.locator("#contacts-allowed")).to_contain_text("The campaign is completed")
    page.get_by_label(re.compile("^Select line")).check()
    expect(page.get_by_role("button", name=re.compile("^Remove selected"))).to_be_disabled()
    screenshot(page, SHOTS, "6-completed")


def _retry_the_failed(page: Any) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name="Retry failed").click()
    result = page.locator("#retry-result")
    # Not on WhatsApp: never retried, and the answer says how many were skipped.
    expect(result).to_contain_text("Queued 0", timeout=10_000)
    expect(result).to_contain_text(f"unavailable {len(UNAVAILABLE)}")


def _people_actions(console: ConsolePage, base: str) -> None:
    from playwright.sync_api import expect

    page = console.page
    person = UNAVAILABLE[0]
    page.goto(f"{base}/dashboard/contacts")
    page.get_by_label(re.compile("^Phone")).fill(person)
    page.get_by_role("button", name="Look up").click()
    expect(page.locator("#contact-title")).to_have_text(person, timeout=10_000)
    page.get_by_label("Block reason").fill("asked us by phone")
    page.get_by_role("button", name="Block", exact=True).click()
    record = page.locator("#contact-record")
    expect(record.locator('tr[data-field="blocked_reason"] td')).to_have_text("asked us by phone")
    assert_accessible(page, "the contact page")
    missed = unreachable_by_tab(page)
    assert missed == [], missed
    screenshot(page, SHOTS, "7-contact")
    page.get_by_role("button", name="Unblock").click()
    expect(record.locator('tr[data-field="status"] td')).not_to_have_text("BLOCKED")
    expect(page.get_by_role("button", name="Block", exact=True)).to_be_enabled()
    page.get_by_role("button", name="Opt out").click()
    expect(record.locator('tr[data-field="opted_out"] td')).to_have_text("yes")
    page.get_by_role("button", name="Remove record").click()
    expect(page.locator("#person-result")).to_have_text("Record removed; the opt-out stays.")
    expect(record.locator('tr[data-field="opted_out"] td')).to_have_text("yes")
    questions = console.dialogs[-4:]
    assert [q.split(" ", 1)[0] for q in questions] == ["Block", "Unblock", "Record", "Remove"]


def test_an_operator_runs_a_campaign_from_the_console(
    live: LiveStack, browser: Any, db: Engine, tmp_path: Path
) -> None:
    live.sim.update_config(undeliverable_share=0.03)  # numbers ending 00-02: not on WhatsApp
    live.worker = start_worker(live.env, live.log_dir, queues="ingest,dispatch")
    console = ConsolePage(browser)
    page = console.page
    base = live.api_url
    data = tmp_path / "guests.csv"
    data.write_bytes(csv_file(GOOD, bad=BAD))

    campaign_id = _create_through_the_form(page, base)
    _upload_and_read_the_report(page, data)
    _remove_one_contact(page)
    _start_pause_resume(page, console)
    _follow_to_completion(page)
    _retry_the_failed(page)
    _people_actions(console, base)

    # The API agrees with what the page showed.
    body = httpx.get(f"{base}/campaigns/{campaign_id}", headers=AUTH).json()
    assert body["status"] == "completed"
    assert live.sim.stats()["duplicate_count"] == 0
    assert console.errors == []
    page.close()
