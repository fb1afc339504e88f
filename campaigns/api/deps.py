"""Shared dependencies of the HTTP API: the runtime and bearer-token auth."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

import redis
from fastapi import Depends, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from campaigns.api.errors import BearerRefused
from campaigns.clients import telemetry
from campaigns.clients.send_gate import SyncPauseFlags
from campaigns.runtime.stores import Runtime, resolve, resolved
from campaigns.services import campaigns as campaign_service
from campaigns.services import tokens
from schemas.api import MAX_ID

BEARER_SCHEME = "HTTPBearer"  # its name in /openapi.json's securitySchemes
_bearer = HTTPBearer(
    scheme_name=BEARER_SCHEME,
    auto_error=False,
    description="a token from API_TOKENS or `wa-campaigns token create`",
)


async def get_runtime() -> Runtime:
    """Async: a sync dependency runs in the threadpool, a thread hop on every request (py-spy:
    11% of the webhook receiver's CPU). Only the first call of a process may block."""
    runtime = resolved()
    if runtime is None:
        runtime = await run_in_threadpool(resolve)
    return runtime


async def get_engine(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Engine:
    return runtime.engine


async def require_token(
    runtime: Annotated[Runtime, Depends(get_runtime)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise BearerRefused("unauthenticated", "a bearer token is required")
    valid = await run_in_threadpool(
        tokens.token_is_valid,
        runtime.engine,
        runtime.settings.configured_api_tokens(),
        credentials.credentials,
    )
    if not valid:
        raise BearerRefused("invalid_token", "the bearer token is not valid")


EngineDep = Annotated[Engine, Depends(get_engine)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


@lru_cache(maxsize=4)
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def get_redis(runtime: RuntimeDep) -> redis.Redis:
    return _redis_client(runtime.redis_url)


RedisDep = Annotated[redis.Redis, Depends(get_redis)]


def get_flags(client: RedisDep) -> SyncPauseFlags:
    return SyncPauseFlags(client)


def get_rate_reader(client: RedisDep) -> campaign_service.RateReader:
    return lambda campaign_id: telemetry.rate_now(client, campaign_id)


FlagsDep = Annotated[SyncPauseFlags, Depends(get_flags)]
RateDep = Annotated[campaign_service.RateReader, Depends(get_rate_reader)]


# Ids in paths: a number no id can pass is a 422, never a database error (bigint overflow).
CampaignId = Annotated[int, Path(ge=1, le=MAX_ID, description="a campaign's id")]
UploadId = Annotated[int, Path(ge=1, le=MAX_ID, description="an upload's id")]
PhonePath = Annotated[
    str,
    Path(
        description="an E.164 number with or without its + (sent as %2B) or a wa_id; one that "
        "is no phone number (by its country's numbering plan, which a schema cannot show) is "
        "a 422 `invalid_phone`"
    ),
]
