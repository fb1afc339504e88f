"""Helpers of the console's browser tests: pages that record their errors, screenshots in the
artifacts directory, axe-core run in the page, and a slow link for uploads."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("WA_E2E_ARTIFACTS") or ROOT / "tests" / "e2e" / "artifacts")
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
AXE_VERSION = "4.14.1"
BLOCKING_IMPACTS = ("serious", "critical")


class ConsolePage:
    """A browser page that keeps every page error, console error and CSP report."""

    def __init__(self, browser: Any, *, width: int = 1280, height: int = 900) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("console", self._console)
        self.page.on("dialog", self._accept)

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.errors.append(f"console: {msg.text}")
        if "Content Security Policy" in msg.text:
            self.errors.append(f"csp: {msg.text}")

    def _accept(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()


def screenshot(page: Any, test: str, name: str) -> Path:
    """A full-page screenshot under ``ARTIFACTS/<test>/<name>.png``."""
    folder = ARTIFACTS / test
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """The serious and critical violations axe-core finds on the page as it is now.

    The vendored file is evaluated through the DevTools protocol (``page.evaluate``), which
    the page's Content-Security-Policy does not govern: the page under test keeps its CSP,
    and no inline script is added to it."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    assert page.evaluate("axe.version") == AXE_VERSION
    results = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in results
        if v["impact"] in BLOCKING_IMPACTS
    ]


def assert_accessible(page: Any, what: str) -> None:
    found = axe_violations(page)
    assert found == [], f"axe on {what}:\n{json.dumps(found, indent=1)}"


class SlowLink:
    """A TCP relay in threads between the browser and the server: what the browser sends
    reaches the server at ``bytes_per_s``; answers come back at full speed. A closed tab
    closes its connections, and the relay closes the server's side at once, as a real slow
    link that drops would. (Chromium's own network emulation delays the answer, not the
    bytes: the server could still get the whole file.)"""

    CHUNK = 8192

    def __init__(self, target_port: int, bytes_per_s: int) -> None:
        self.target_port = target_port
        self.bytes_per_s = bytes_per_s
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive window: the browser's bytes wait in its own buffers, so its
        # progress events follow what the server gets.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, name="slow-link", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            pair = (client, upstream)
            for src, dst, rate in ((client, upstream, self.bytes_per_s), (upstream, client, 0)):
                threading.Thread(
                    target=self._pipe, args=(src, dst, rate, pair), daemon=True
                ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, rate: int, pair: Any) -> None:
        try:
            while chunk := src.recv(self.CHUNK):
                dst.sendall(chunk)
                if rate:
                    time.sleep(len(chunk) / rate)
        except OSError:
            pass
        finally:  # either side gone: both go
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.listener.close()


def csv_file(rows: int, *, bad: int = 0, start: int = 0, pad: int = 0) -> bytes:
    """``rows`` valid German mobile numbers with a first name (and ``pad`` characters of
    note per row, to make a large file), then ``bad`` rows that are no phone number."""
    note = "x" * pad
    lines = ["phone,first_name,note"]
    lines += [f"+4915123{start + i:06d},Guest{i},{note}" for i in range(rows)]
    lines += [f"not-a-phone-{i},Broken{i}," for i in range(bad)]
    return ("\n".join(lines) + "\n").encode()


# Every control a keyboard user must reach: visible, enabled, not inert.
_CONTROLS = """() => [...document.querySelectorAll(
    'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])')]
  .filter((e) => !e.disabled && e.type !== 'hidden' && e.getClientRects().length > 0
    && getComputedStyle(e).visibility !== 'hidden')
  .map((e) => e.id || e.getAttribute('aria-label') || e.name || e.textContent.trim())"""
_FOCUSED = """() => { const e = document.activeElement;
  return e && e !== document.body
    ? (e.id || e.getAttribute('aria-label') || e.name || e.textContent.trim()) : null; }"""


def unreachable_by_tab(page: Any, *, limit: int = 400) -> list[str]:
    """The visible, enabled controls that pressing Tab, from wherever the focus is, never
    reaches (file inputs included: Space opens their chooser)."""
    controls = page.evaluate(_CONTROLS)
    seen: set[str] = set()
    for _ in range(limit):  # focus leaves the page after its last control, then comes back
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        if focused is not None:
            seen.add(focused)
        if seen >= set(controls):
            break
    return [c for c in controls if c not in seen]
