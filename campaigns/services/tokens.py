"""API tokens: created by the CLI, checked on every HTTP call."""

from __future__ import annotations

import secrets

from sqlalchemy import Engine

from campaigns.storage import tokens as tokens_db
from schemas.api import (
    TokenCreated,
)


def create_api_token(engine: Engine, name: str) -> TokenCreated:
    token = "wac_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        token_id = tokens_db.insert_api_token(conn, name, token)
    return TokenCreated(id=token_id, name=name, token=token)


def token_is_valid(engine: Engine, configured: set[str], presented: str) -> bool:
    if any(secrets.compare_digest(presented, t) for t in configured):
        return True
    with engine.connect() as conn:
        return tokens_db.api_token_exists(conn, presented)
