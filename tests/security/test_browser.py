"""The dashboard and /docs in headless Chromium under the Content-Security-Policy.

The page must work with scripts and styles from this origin only: no CSP violation in the
console, the token taken from the URL fragment (never the query string) and removed from
the address bar, and Swagger UI rendering every operation from the local bundle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from tests.conftest import API_TOKEN
from tests.e2e.test_dashboard_browser import browser, server

__all__ = ["browser", "server"]


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    yield page, console
    page.close()


def _violations(console: list[str]) -> list[str]:
    return [line for line in console if "Content Security Policy" in line or "pageerror" in line]


def test_dashboard_takes_the_token_from_the_fragment_under_the_csp(
    server: str, page: tuple[Any, list[str]], db: Engine
) -> None:
    from playwright.sync_api import expect

    tab, console = page
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {API_TOKEN}"}) as c:
        created = c.post("/campaigns", json={"name": "CSP check", "region": "DE"})
        assert created.status_code == 201, created.text
    tab.goto(f"{server}/dashboard#token={API_TOKEN}")
    expect(tab.locator("#campaigns-table tbody tr")).to_have_count(1, timeout=15_000)
    expect(tab.locator("#campaigns-table")).to_contain_text("CSP check")
    assert "token" not in tab.url, tab.url
    assert tab.evaluate("localStorage.getItem('wa-campaigns-token')") == API_TOKEN
    assert not _violations(console), console


def test_a_token_in_the_query_string_is_not_used(
    server: str, page: tuple[Any, list[str]], db: Engine
) -> None:
    from playwright.sync_api import expect

    tab, console = page
    requests: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.goto(f"{server}/dashboard?token={API_TOKEN}")
    # No token was taken from the query: the page asks for one instead (its own prompt).
    expect(tab.get_by_role("textbox", name="API token")).to_be_focused(timeout=15_000)
    expect(tab.locator("#list-view")).to_be_hidden()
    assert tab.evaluate("localStorage.getItem('wa-campaigns-token')") is None
    assert not [url for url in requests if "/campaigns" in url], requests
    assert not _violations(console), console


def test_docs_render_from_the_local_bundle_under_the_csp(
    server: str, page: tuple[Any, list[str]], db: Engine
) -> None:
    from playwright.sync_api import expect

    tab, console = page
    requests: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.goto(f"{server}/docs")
    expect(tab.locator(".opblock").first).to_be_visible(timeout=15_000)
    assert tab.locator(".opblock").count() > 10
    assert all(url.startswith(server) or url.startswith("data:") for url in requests), requests
    assert not _violations(console), console
