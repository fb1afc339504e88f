"""The FastAPI application: routers, auth, and one shape for every refusal."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from campaigns.api import campaigns, dashboard, errors, metrics, profiles, registry, webhooks
from campaigns.api.deps import require_token


def create_app() -> FastAPI:
    app = FastAPI(
        title="wa-campaigns",
        description="WhatsApp template campaigns: CSV intake, dispatch, delivery status.",
        version="0.1.0",
    )
    app.include_router(campaigns.router, dependencies=[Depends(require_token)])
    # Before the registry's: /contacts/schemas is not a /contacts/{phone}.
    app.include_router(profiles.router, dependencies=[Depends(require_token)])
    app.include_router(registry.router, dependencies=[Depends(require_token)])
    app.include_router(dashboard.router, dependencies=[Depends(require_token)])
    app.include_router(dashboard.pages)
    app.include_router(metrics.router)
    app.include_router(webhooks.router)  # signed by the platform: no bearer token

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    errors.install(app)  # one {code, message} shape for every refusal
    return app
