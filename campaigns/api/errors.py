"""One refusal shape over HTTP: every refusal answers ``{"code", "message"}``.

A :class:`~campaigns.domain.refusals.Refusal` gets the HTTP status of its kind from
:data:`STATUS_OF_KIND`, the one place that maps kinds to statuses. The framework's own
refusals (unknown path, wrong method, a body or query that does not validate) are answered in
the same shape, so no client ever sees FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from types import MappingProxyType

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from campaigns.domain.refusals import Refusal, RefusalKind
from schemas.api import validation_message

STATUS_OF_KIND: Mapping[RefusalKind, int] = MappingProxyType(
    {
        RefusalKind.INVALID: status.HTTP_422_UNPROCESSABLE_CONTENT,
        RefusalKind.NOT_FOUND: status.HTTP_404_NOT_FOUND,
        RefusalKind.CONFLICT: status.HTTP_409_CONFLICT,
        RefusalKind.BAD_FILE: status.HTTP_400_BAD_REQUEST,
        RefusalKind.TOO_LARGE: status.HTTP_413_CONTENT_TOO_LARGE,
        RefusalKind.UNAUTHENTICATED: status.HTTP_401_UNAUTHORIZED,
        RefusalKind.FORBIDDEN: status.HTTP_403_FORBIDDEN,
        RefusalKind.PRECONDITION_FAILED: status.HTTP_412_PRECONDITION_FAILED,
        RefusalKind.UNAVAILABLE: status.HTTP_503_SERVICE_UNAVAILABLE,
    }
)


class BearerRefused(Refusal):
    """No or no valid bearer token; answered with the ``WWW-Authenticate: Bearer`` challenge."""

    default_kind = RefusalKind.UNAUTHENTICATED


def problem(
    http_status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The refusal body (``schemas.api.Problem``) with its status."""
    return JSONResponse(
        {"code": code, "message": message}, status_code=http_status, headers=headers
    )


def refusal_response(exc: Refusal) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, BearerRefused) else None
    return problem(STATUS_OF_KIND[exc.kind], exc.code, exc.message, headers)


async def _on_refusal(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refusal)  # registered for Refusal only
    return refusal_response(exc)


async def _on_http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return http_exception_response(exc)


def http_exception_response(
    exc: StarletteHTTPException, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Starlette's own refusals (404 unknown path, 405 wrong method, ...) in the one shape;
    ``headers`` replace the exception's own."""
    phrase = _phrase(exc.status_code)
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    return problem(exc.status_code, code, message, {**(exc.headers or {}), **(headers or {})})


async def _on_invalid_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem(
        STATUS_OF_KIND[RefusalKind.INVALID], "invalid_request", validation_message(exc.errors())
    )


def _phrase(http_status: int) -> str:
    try:
        return HTTPStatus(http_status).phrase
    except ValueError:
        return f"HTTP {http_status}"


def install(app: FastAPI) -> None:
    """Registers the three handlers that give every refusal of ``app`` the one shape."""
    app.add_exception_handler(Refusal, _on_refusal)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_invalid_request)
