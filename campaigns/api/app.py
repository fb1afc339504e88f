"""The FastAPI application: routers, auth, security headers, and one shape for every refusal."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from campaigns.api import (
    campaigns,
    contract,
    dashboard,
    docs,
    errors,
    profiles,
    registry,
    retry,
    server,
    webhooks,
)
from campaigns.api.deps import require_token
from campaigns.api.security import SecurityHeaders
from campaigns.runtime.config import get_settings


def create_app() -> FastAPI:
    get_settings()  # refused settings end the process here, before it listens
    app = FastAPI(
        title="wa-campaigns",
        description="WhatsApp template campaigns: CSV intake, dispatch, delivery status.",
        version="0.1.0",
        docs_url=None,  # served by campaigns.api.docs without a CDN; no ReDoc
        redoc_url=None,
        lifespan=server.lifespan,  # the /metrics listener on METRICS_PORT
    )
    app.add_middleware(SecurityHeaders)
    app.include_router(docs.router)
    app.include_router(campaigns.router, dependencies=[Depends(require_token)])
    # Before the registry's: /contacts/schemas is not a /contacts/{phone}.
    app.include_router(profiles.router, dependencies=[Depends(require_token)])
    app.include_router(registry.router, dependencies=[Depends(require_token)])
    app.include_router(retry.router, dependencies=[Depends(require_token)])
    app.include_router(dashboard.router, dependencies=[Depends(require_token)])
    app.include_router(dashboard.pages)
    app.include_router(webhooks.router)  # signed by the platform: no bearer token

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    errors.install(app)  # one {code, message} shape for every refusal
    contract.document_refusals(app)  # ... and every refusal published per operation
    return app
