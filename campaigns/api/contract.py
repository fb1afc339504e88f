"""The refusals each operation publishes in ``/openapi.json``: every status it can answer,
each with the one refusal body (``schemas.api.Problem``: ``{code, message}``).

Two sources, one table of statuses (:data:`campaigns.api.errors.STATUS_OF_KIND`):

- :func:`refused` gives an operation's ``responses=`` for the refusal kinds its use case
  raises (409 for a command in the wrong state, 400 and 413 for an upload, ...), with a
  description of when;
- :func:`document_refusals` adds, to every operation of the app, what follows from its
  signature alone: 401 behind the bearer token, 422 when it takes any parameter or body (the
  framework's validation refusal, in our shape), 404 when its path names something. It runs
  once in ``create_app``, so an operation added later is documented without a line here.

A description a route gives wins over the defaults.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from campaigns.api.deps import BEARER_SCHEME as _BEARER
from campaigns.api.errors import STATUS_OF_KIND, http_exception_response
from campaigns.domain.refusals import RefusalKind
from schemas.api import Problem

Responses = dict[int | str, dict[str, Any]]

WHEN: Mapping[RefusalKind, str] = MappingProxyType(
    {
        RefusalKind.INVALID: "a parameter or the body breaks a rule (`invalid_request`: "
        "`field: reason; ...`, or the rule's own code); nothing changed",
        RefusalKind.NOT_FOUND: "what the path names does not exist (`<thing>_not_found`)",
        RefusalKind.CONFLICT: "legal input, not allowed in the current state; nothing changed",
        RefusalKind.BAD_FILE: "the upload is refused for its content; nothing is kept",
        RefusalKind.TOO_LARGE: "the body is over its size limit; refused as it arrives",
        RefusalKind.UNAUTHENTICATED: "no bearer token, or not a valid one (`unauthenticated`, "
        "`invalid_token`)",
        RefusalKind.FORBIDDEN: "credentials that do not allow this",
        RefusalKind.PRECONDITION_FAILED: "If-Match is not the current generation",
        RefusalKind.UNAVAILABLE: "a part it needs is not configured or not reachable",
    }
)

_CHALLENGE = {
    "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}},
}


def refused(*kinds: RefusalKind, **when: str) -> Responses:
    """``responses=`` for the refusal kinds an operation can answer, each with the Problem
    body. ``when`` overrides a kind's description by its name: ``conflict="..."``."""
    responses: Responses = {}
    for kind in kinds:
        entry: dict[str, Any] = {"model": Problem, "description": when.get(kind.value, WHEN[kind])}
        if kind is RefusalKind.UNAUTHENTICATED:
            entry["headers"] = _CHALLENGE
        responses[STATUS_OF_KIND[kind]] = entry
    unknown = set(when) - {kind.value for kind in kinds}
    if unknown:
        raise ValueError(f"descriptions for kinds not listed: {sorted(unknown)}")
    return responses


def document_refusals(app: FastAPI) -> None:
    """From now on ``app.openapi()`` adds, to every operation, the refusals it implies (see
    the module doc), and gives the framework's 422 our body."""
    build = app.openapi
    completed: list[dict[str, Any]] = []  # the schema FastAPI built and cached, once done

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by FastAPI; rebuilt only when routes are added
        if not completed or completed[0] is not schema:
            complete(schema)
            completed[:] = [schema]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented hook

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # registered for 405 only
        allowed = allowed_methods(openapi(), request.url.path)
        return http_exception_response(exc, {"Allow": allowed} if allowed else None)

    # The router names the methods of the first route whose path matched; a path with several
    # routes (GET and POST /campaigns) allows all of theirs, as published.
    app.add_exception_handler(405, method_not_allowed)


def allowed_methods(schema: Mapping[str, Any], path: str) -> str | None:
    """``Allow`` for ``path``: the methods of its most specific published path template
    (``/contacts/schemas`` before ``/contacts/{phone}``); None when none matches."""
    matches = [
        (template.count("{"), item)
        for template, item in schema.get("paths", {}).items()
        if _template_regex(template).fullmatch(path)
    ]
    if not matches:
        return None
    _, item = min(matches, key=lambda match: match[0])
    return ", ".join(sorted(m.upper() for m in item if m in _METHODS))


@lru_cache(maxsize=256)
def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def complete(schema: dict[str, Any]) -> None:
    """Adds the implied refusals to every operation of an OpenAPI document, in place."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault(
        "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status, entry in _implied(operation).items():
                if str(status) not in responses or _is_framework_422(responses[str(status)]):
                    responses[str(status)] = _as_openapi(entry)
    if "HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)


_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def _implied(operation: Mapping[str, Any]) -> Responses:
    parameters = operation.get("parameters", [])
    kinds, when = [], {}
    if any(_BEARER in requirement for requirement in operation.get("security", [])):
        kinds.append(RefusalKind.UNAUTHENTICATED)
    if parameters or "requestBody" in operation:
        kinds.append(RefusalKind.INVALID)
    if any(p.get("in") == "path" for p in parameters):
        kinds.append(RefusalKind.NOT_FOUND)
    if "application/json" in operation.get("requestBody", {}).get("content", {}):
        kinds.append(RefusalKind.BAD_FILE)  # the framework's 400 for a body it cannot decode
        when[RefusalKind.BAD_FILE.value] = "the body cannot be read as UTF-8 JSON (`bad_request`)"
    return refused(*kinds, **when)


def _as_openapi(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k != "model"}
    out["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return out


def _is_framework_422(entry: Mapping[str, Any]) -> bool:
    return "HTTPValidationError" in json.dumps(entry)
