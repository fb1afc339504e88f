"""The FastAPI application: routers, auth, and one shape for every refusal."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from campaigns.api import campaigns, dashboard, docs, server, webhooks
from campaigns.api.deps import require_token
from campaigns.api.security import SecurityHeaders
from campaigns.domain import refusals
from campaigns.domain.admin import CommandRefused
from campaigns.domain.csv_intake import RefusalCode, UploadRefused
from campaigns.domain.states import IllegalTransition
from campaigns.runtime.config import get_settings
from schemas.api import validation_message


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
    app.include_router(dashboard.router, dependencies=[Depends(require_token)])
    app.include_router(dashboard.pages)
    app.include_router(webhooks.router)  # signed by the platform: no bearer token

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(refusals.NotFound)
    async def _not_found(_: Request, exc: refusals.NotFound) -> JSONResponse:
        return _problem(status.HTTP_404_NOT_FOUND, exc.code, str(exc))

    @app.exception_handler(CommandRefused)
    async def _refused(_: Request, exc: CommandRefused) -> JSONResponse:
        return _problem(status.HTTP_409_CONFLICT, exc.code, exc.message)

    @app.exception_handler(IllegalTransition)
    async def _illegal(_: Request, exc: IllegalTransition) -> JSONResponse:
        return _problem(status.HTTP_409_CONFLICT, "illegal_transition", str(exc))

    @app.exception_handler(UploadRefused)
    async def _upload_refused(_: Request, exc: UploadRefused) -> JSONResponse:
        code = (
            status.HTTP_413_CONTENT_TOO_LARGE
            if exc.code is RefusalCode.TOO_LARGE
            else status.HTTP_400_BAD_REQUEST
        )
        return _problem(code, exc.code.value, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The refusal shape every other error has, not FastAPI's default ``detail`` list.
        return _problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "invalid_request",
            validation_message(exc.errors()),
        )

    return app


def _problem(http_status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=http_status)
