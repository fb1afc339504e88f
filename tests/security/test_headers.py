"""Every response carries the security headers; /docs runs from this origin under the CSP."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from campaigns.api.dashboard import STATIC

CSP = "default-src 'self'; frame-ancestors 'none'"
EXPECTED = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def assert_secure(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    for name, value in EXPECTED.items():
        assert headers.get(name) == value, (name, headers.get(name))


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard",
        "/dashboard/campaigns/1",
        "/dashboard/static/dashboard.js",
        "/dashboard/static/dashboard.css",
        "/campaigns",
        "/campaigns/999",  # a refusal carries them too
        "/docs",
        "/docs/static/swagger-ui-bundle.js",
        "/openapi.json",
        "/healthz",
        "/metrics",  # 404 here
    ],
)
def test_security_headers_on_pages_api_and_errors(api: TestClient, path: str) -> None:
    assert_secure(api.get(path))


def test_unauthenticated_refusals_carry_them(api: TestClient) -> None:
    api.headers.pop("Authorization")
    response = api.get("/campaigns")
    assert response.status_code == 401
    assert_secure(response)


def _scripts_and_styles(html: str) -> tuple[list[str], list[str]]:
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    styles = re.findall(r"<link\b[^>]*rel=\"stylesheet\"[^>]*href=\"([^\"]+)\"", html)
    for attrs, body in scripts:
        assert body.strip() == "", "inline script: the CSP would block it"
        assert "src=" in attrs
    assert "<style" not in html and " style=" not in html and "onclick" not in html.lower()
    return [re.search(r'src="([^"]+)"', a).group(1) for a, _ in scripts], styles  # type: ignore[union-attr]


@pytest.mark.parametrize("page", ["/docs", "/dashboard"])
def test_pages_load_only_same_origin_files_and_nothing_inline(api: TestClient, page: str) -> None:
    html = api.get(page).text
    scripts, styles = _scripts_and_styles(html)
    assert scripts and styles
    for url in scripts + styles:
        assert url.startswith("/"), f"{page} loads {url} from another origin"
        asset = api.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] in {"text/javascript", "text/css"}


def test_docs_are_swagger_ui_served_locally_and_redoc_is_off(api: TestClient) -> None:
    bundle = api.get("/docs/static/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text
    init = api.get("/docs/static/docs.js").text
    assert '"/openapi.json"' in init
    assert api.get("/openapi.json").status_code == 200
    assert api.get("/redoc").status_code == 404
    assert api.get("/docs/static/..%2Fapp.py").status_code == 404
    assert api.get("/docs/static/index.html").status_code == 404


def test_the_dashboard_never_reads_a_token_from_the_query_string(api: TestClient) -> None:
    # The entry module and the console's modules: only api.js reads the token from the URL.
    names = ["dashboard.js"] + [f"console/{p.name}" for p in (STATIC / "console").glob("*.js")]
    for name in names:
        js = api.get(f"/dashboard/static/{name}").text
        assert "location.search" not in js.replace("location.pathname + location.search", "")
    js = api.get("/dashboard/static/console/api.js").text
    assert "location.hash" in js and 'get("token")' in js
