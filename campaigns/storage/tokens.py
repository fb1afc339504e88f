"""API tokens, stored as sha256 only: a leaked table leaks no usable token."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, insert, select

from campaigns.storage.tables import (
    api_tokens_t,
)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def insert_api_token(conn: Connection, name: str, token: str) -> int:
    query = insert(api_tokens_t).values(name=name, token_sha256=token_digest(token))
    return int(conn.execute(query.returning(api_tokens_t.c.id)).scalar_one())


def api_token_exists(conn: Connection, token: str) -> bool:
    query = select(api_tokens_t.c.id).where(
        api_tokens_t.c.token_sha256 == token_digest(token), api_tokens_t.c.revoked_at.is_(None)
    )
    return conn.execute(query).first() is not None
