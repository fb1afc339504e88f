"""Contact profiles over HTTP (seed 004): ``/contacts/schemas`` and
``/contacts/{phone}/profile``.

Bodies are read raw and parsed here, so a body that is not JSON, or not the right shape,
gets a 422 whose message says what is wrong (``invalid_schema`` / ``invalid_profile``)
instead of the framework's generic one. This router is included before the registry's, so
``/contacts/schemas`` is never taken for a ``/contacts/{phone}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from campaigns.api.deps import EngineDep, PhonePath
from campaigns.domain.profiles import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    InvalidProfile,
    InvalidSchema,
    json_body,
)
from campaigns.services import profiles
from schemas.api import MAX_ID, Problem
from schemas.profiles import ProfileOut, SchemaListItem, SchemaOut

router = APIRouter(tags=["profiles"])

_SCHEMA_REFUSED: dict[int | str, dict[str, Any]] = {
    422: {"model": Problem, "description": "not JSON, or a field breaks a rule (invalid_schema)"},
}
_PROFILE_REFUSED: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no record of this person, or no such schema"},
    412: {"model": Problem, "description": "If-Match is not the current generation"},
    422: {
        "model": Problem,
        "description": "not JSON or not an object, a field the newest schema lacks, a value "
        "of the wrong type (invalid_profile); not a phone number (invalid_phone)",
    },
}
_SCHEMA_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
        "description": 'seed 004: {"version": "0.0.1", "fields": [{"name", "display", "type", '
        '"default", "is_private", "null", "enum"}, ...]}',
    }
}
_PROFILE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
        "description": 'field: value, e.g. {"name": "Fizbo", "age": 2}',
    }
}

IfMatch = Annotated[
    str | None, Header(description="the generation the write expects (412 when it is not)")
]


async def _read(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge()
    body = bytearray()
    async for block in request.stream():
        body += block
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge()
    return bytes(body)


@router.post(
    "/contacts/schemas",
    status_code=201,
    response_model=SchemaOut,
    responses=_SCHEMA_REFUSED,
    openapi_extra=_SCHEMA_BODY,
)
async def create_schema(request: Request, engine: EngineDep) -> SchemaOut:
    """A new schema (a new uuid): from now on profile writes are checked against it."""
    body = json_body(await _read(request), InvalidSchema)
    return await run_in_threadpool(profiles.create_schema, engine, body)


@router.get("/contacts/schemas", response_model=list[SchemaListItem])
def list_schemas(
    engine: EngineDep,
    response: Response,
    before_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="next page: from the Link")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=profiles.MAX_PAGE)] = profiles.DEFAULT_PAGE,
) -> list[SchemaListItem]:
    """Every schema, newest first (the first is the one writes are checked against)."""
    items, next_id = profiles.list_schemas(engine, limit=limit, before_id=before_id)
    if next_id is not None:
        response.headers["Link"] = (
            f'</contacts/schemas?before_id={next_id}&limit={limit}>; rel="next"'
        )
    return items


@router.get(
    "/contacts/schemas/{uuid}",
    response_model=SchemaOut,
    responses={404: {"model": Problem, "description": "no such schema"}},
)
def get_schema(uuid: str, engine: EngineDep) -> SchemaOut:
    return profiles.get_schema(engine, uuid)


@router.get("/contacts/{phone}/profile", response_model=ProfileOut, responses=_PROFILE_REFUSED)
def get_profile(
    phone: PhonePath,
    engine: EngineDep,
    response: Response,
    schema: Annotated[str | None, Query(description="read under this (older) schema")] = None,
) -> ProfileOut:
    """The profile under the newest schema, or under ``?schema=`` with that schema's fields
    only. A known person without a profile has the defaults at generation 0."""
    out = profiles.get_profile(engine, phone, schema)
    response.headers["ETag"] = f'"{out.generation}"'
    return out


async def _write(
    request: Request,
    engine: EngineDep,
    phone: PhonePath,
    mode: profiles.WriteMode,
    if_match: str | None,
) -> ProfileOut:
    expected = profiles.parse_if_match(if_match)
    body = (
        None
        if mode is profiles.WriteMode.DELETE
        else json_body(await _read(request), InvalidProfile)
    )
    return await run_in_threadpool(
        profiles.write_profile, engine, phone, mode, body, if_match=expected
    )


@router.put(
    "/contacts/{phone}/profile",
    response_model=ProfileOut,
    responses=_PROFILE_REFUSED,
    openapi_extra=_PROFILE_BODY,
)
async def replace_profile(
    phone: PhonePath, request: Request, engine: EngineDep, if_match: IfMatch = None
) -> ProfileOut:
    """Replaces the profile: fields left out take the newest schema's defaults."""
    return await _write(request, engine, phone, profiles.WriteMode.PUT, if_match)


@router.patch(
    "/contacts/{phone}/profile",
    response_model=ProfileOut,
    responses=_PROFILE_REFUSED,
    openapi_extra=_PROFILE_BODY,
)
async def update_profile(
    phone: PhonePath, request: Request, engine: EngineDep, if_match: IfMatch = None
) -> ProfileOut:
    """Merges the fields given into the profile; the others stay."""
    return await _write(request, engine, phone, profiles.WriteMode.PATCH, if_match)


@router.delete("/contacts/{phone}/profile", responses=_PROFILE_REFUSED)
async def reset_profile(
    phone: PhonePath, request: Request, engine: EngineDep, if_match: IfMatch = None
) -> dict[str, Any]:
    """Resets every field to the newest schema's default; answers ``{}``."""
    await _write(request, engine, phone, profiles.WriteMode.DELETE, if_match)
    return {}
