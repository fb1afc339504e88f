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
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI

from campaigns.api.deps import BEARER_SCHEME as _BEARER
from campaigns.api.errors import STATUS_OF_KIND
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
            for status, entry in refused(*_implied(operation)).items():
                if str(status) not in responses or _is_framework_422(responses[str(status)]):
                    responses[str(status)] = _as_openapi(entry)
    if "HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)


_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def _implied(operation: Mapping[str, Any]) -> Iterator[RefusalKind]:
    parameters = operation.get("parameters", [])
    if any(_BEARER in requirement for requirement in operation.get("security", [])):
        yield RefusalKind.UNAUTHENTICATED
    if parameters or "requestBody" in operation:
        yield RefusalKind.INVALID
    if any(p.get("in") == "path" for p in parameters):
        yield RefusalKind.NOT_FOUND


def _as_openapi(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k != "model"}
    out["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return out


def _is_framework_422(entry: Mapping[str, Any]) -> bool:
    return "HTTPValidationError" in json.dumps(entry)
