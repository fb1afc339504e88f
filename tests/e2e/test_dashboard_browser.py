"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

A real uvicorn server runs the app on a free port against the test database; the browser
loads the campaign page, clicks Pause, accepts the confirm dialog, sees the status change
and takes a screenshot that must not be blank. Chromium comes from the system
(``scripts/bootstrap`` installs Debian's ``chromium`` when it can); Playwright's own browser
download is never used. A missing browser fails the test: it is never skipped.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from campaigns.runtime.embedded import free_port
from campaigns.services import uploads
from tests.conftest import API_TOKEN

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CSV = (
    "phone,first_name\n"
    + "".join(f"+49151234567{i:02d},Guest{i}\n" for i in range(40))
    + ("not-a-phone,Broken\n")
)


@pytest.fixture
def server(db: Engine) -> Iterator[str]:
    """The real app under uvicorn in a thread (same process: same test database and Redis)."""
    import uvicorn

    from campaigns.api.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, under Playwright; a missing one fails the test."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`; "
            "scripts/bootstrap does it when run as root)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a broken dev install
        pytest.fail("playwright is not installed: run `.venv/bin/pip install -e '.[dev]'`")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _campaign_with_contacts(
    base: str, engine: Engine, *, valid: int = 40, invalid: int = 1
) -> dict[str, Any]:
    from campaigns.runtime.stores import resolve

    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        created = client.post(
            "/campaigns",
            json={
                "name": "Browser check",
                "template": "spring_offer",
                "region": "DE",
                "body_variables": ["first_name"],
            },
        )
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        upload = client.post(
            f"/campaigns/{cid}/uploads?filename=guests.csv",
            content=CSV.encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert upload.status_code == 202, upload.text
        # The upload went through the API. Validate it here: no worker need run in this test.
        # An ingest worker of the same test session may take the queued task as well; the
        # ingest is safe to run twice (a lock per upload), so wait for whichever finishes.
        upload_id = upload.json()["id"]
        settings = resolve().settings
        uploads.run_ingest(
            engine,
            upload_id,
            max_rows=settings.max_upload_rows,
            chunk_rows=settings.ingest_chunk_rows,
        )
        deadline = time.monotonic() + 60
        while (report := client.get(f"/uploads/{upload_id}").json())["status"] != "completed":
            assert time.monotonic() < deadline, report
            time.sleep(0.1)
        assert (report["valid"], report["invalid"]) == (valid, invalid)
        started = client.post(f"/campaigns/{cid}/start", json={})
        assert started.status_code == 200, started.text
        assert started.json()["status"] == "running"
        return dict(started.json())


def test_pause_from_the_dashboard(server: str, browser: Any, db: Engine, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    campaign = _campaign_with_contacts(server, db)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.accept()

    page.on("dialog", accept)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # The token travels in the fragment, which the browser never sends to the server.
    page.goto(f"{server}/dashboard/campaigns/{campaign['id']}#token={API_TOKEN}")
    status = page.locator("#c-status")
    expect(status).to_have_text("running", timeout=15_000)
    # The token left the address bar once stored.
    assert "token=" not in page.url
    expect(page.locator("#c-name")).to_have_text("Browser check")
    expect(page.locator('#states-table tr[data-state="initial"] td.num').first).to_have_text("40")
    expect(page.locator("#uploads-table tbody tr")).to_have_count(1)
    expect(page.locator('#queues-table tr[data-queue="dispatch"]')).to_have_count(1)

    page.locator('button[data-command="pause"]').click()
    expect(status).to_have_text("paused", timeout=10_000)
    expect(page.locator("#c-reason")).to_contain_text("paused by admin")
    assert dialogs == ['confirm: Pause campaign "Browser check"?']
    # The buttons follow the status: resume now, pause no longer.
    expect(page.locator('button[data-command="resume"]')).to_be_enabled()
    expect(page.locator('button[data-command="pause"]')).to_be_disabled()

    # The API agrees: the click went through to the server, not just the page.
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {API_TOKEN}"}) as c:
        assert c.get(f"/campaigns/{campaign['id']}").json()["status"] == "paused"

    # A later poll keeps it (the page is live, not a one-off render).
    page.wait_for_timeout(2500)
    expect(status).to_have_text("paused")
    assert errors == []

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=False)
    width, height, colours = png_colours(shot.read_bytes())
    assert (width, height) == (1280, 900)
    assert colours > 20, f"screenshot looks blank: {colours} distinct colours"


def test_contact_lookup_and_suppressed_counts(server: str, browser: Any, db: Engine) -> None:
    from playwright.sync_api import expect

    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    stopped = "+4915123456701"  # the first number of CSV: refused at upload once opted out
    with httpx.Client(base_url=server, headers=headers, timeout=30) as client:
        out = client.post(f"/contacts/{stopped}/opt-out", json={"source": "whatsapp reply"})
        assert out.status_code == 200, out.text
    campaign = _campaign_with_contacts(server, db, valid=39, invalid=2)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/dashboard/campaigns/{campaign['id']}#token={API_TOKEN}")
    opted = page.locator('#suppressed-table tr[data-reason="opted_out"] td.num')
    expect(opted).to_have_text("1", timeout=15_000)
    expect(page.locator("#suppressed-caption")).to_contain_text("1 contacts refused")

    page.goto(f"{server}/dashboard/contacts")
    page.fill("#contact-phone", "4915123456701")  # without its +: the same person
    page.click('#contact-form button[type="submit"]')
    expect(page.locator("#contact-title")).to_have_text(stopped, timeout=10_000)
    record = page.locator("#contact-record")
    expect(record.locator('tr[data-field="opted_out"] td')).to_have_text("yes")
    expect(record.locator('tr[data-field="opt_out_source"] td')).to_have_text("whatsapp reply")
    row = page.locator(f'#contact-campaigns tr[data-campaign="{campaign["id"]}"]')
    expect(row.locator(".contact-state")).to_have_text("invalid_record")
    expect(row).to_contain_text("opted_out")

    page.fill("#contact-phone", "+4915999999999")
    page.click('#contact-form button[type="submit"]')
    expect(page.locator("#contact-message")).to_have_text("No record of +4915999999999.")
    expect(page.locator("#contact-result")).to_be_hidden()
    assert errors == []


# --------------------------------------------------------------------------- PNG, by hand


def png_colours(data: bytes, *, step: int = 4) -> tuple[int, int, int]:
    """Width, height and the number of distinct colours of an 8-bit RGB(A) PNG.

    Every ``step``-th pixel of a row is looked at: plenty to tell a page from a blank one.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, bytearray()
    width = height = 0
    channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0, (depth, interlace)
            channels = {2: 3, 6: 4}[colour_type]
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    previous = bytearray(stride)
    seen: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        row = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], row, previous, channels)
        for x in range(0, stride, channels * step):
            seen.add(bytes(row[x : x + 3]))
        previous = row
    return width, height, len(seen)


def _unfilter(kind: int, row: bytearray, prev: bytearray, bpp: int) -> None:
    n = len(row)
    if kind == 0:
        return
    if kind == 1:
        for i in range(bpp, n):
            row[i] = (row[i] + row[i - bpp]) & 0xFF
    elif kind == 2:
        for i in range(n):
            row[i] = (row[i] + prev[i]) & 0xFF
    elif kind == 3:
        for i in range(n):
            left = row[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + ((left + prev[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(n):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            row[i] = (row[i] + pred) & 0xFF
    else:
        raise AssertionError(f"bad PNG filter {kind}")


def test_png_decoder_counts_colours() -> None:
    # A 4x2 RGB image, rows filtered with Sub and Paeth: the decoder must undo both.
    pixels = [
        [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)],
        [(255, 0, 0), (10, 20, 30), (10, 20, 30), (0, 0, 0)],
    ]
    raw = bytearray()
    prev = bytes(12)
    for filt, row in zip((1, 4), pixels, strict=True):
        flat = bytes(v for px in row for v in px)
        out = bytearray()
        for i, v in enumerate(flat):
            a = flat[i - 3] if i >= 3 else 0
            if filt == 1:
                out.append((v - a) & 0xFF)
            else:
                b, c = prev[i], prev[i - 3] if i >= 3 else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                out.append((v - pred) & 0xFF)
        raw += bytes([filt]) + out
        prev = flat

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(raw)))
        + chunk(b"IEND", b"")
    )
    assert png_colours(png, step=1) == (4, 2, 6)
    # Every 4th pixel: column 0 of each row, red twice.
    assert png_colours(png, step=4) == (4, 2, 1)
