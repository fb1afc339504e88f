"""``/docs``: Swagger UI 5 served from this origin (the files of the ``fastapi-offline``
package), no CDN.

FastAPI's own /docs page loads Swagger UI from a CDN without an integrity hash and starts
it with an inline script; both are refused by the Content-Security-Policy
(:mod:`campaigns.api.security`). This page loads the vendored files and a static init
script, so it runs under ``default-src 'self'``. ReDoc (CDN only) is not served;
``/openapi.json`` is.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, HTMLResponse

STATIC = Path(__file__).parent / "static"
# Only its static files are used (Swagger UI 5 reads OpenAPI 3.1, which FastAPI writes).
_VENDOR = Path(fastapi_offline.__file__).parent / "static"
# A fixed list: no path from the URL ever reaches the disk.
_ASSETS = {
    "swagger-ui.css": (_VENDOR / "swagger-ui.css", "text/css; charset=utf-8"),
    "swagger-ui-bundle.js": (_VENDOR / "swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "docs.js": (STATIC / "docs.js", "text/javascript; charset=utf-8"),
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>wa-campaigns API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/static/docs.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def docs() -> HTMLResponse:
    return HTMLResponse(_PAGE, headers={"Cache-Control": "no-cache"})


@router.get("/docs/static/{name}")
def docs_asset(name: str) -> FileResponse:
    found = _ASSETS.get(name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail={"code": "not_found"})
    path, media_type = found
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})
