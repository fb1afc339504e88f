"""API tokens, stored as sha256 only: a leaked table leaks no usable token."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, RowMapping, func, insert, select, update

from campaigns.storage.tables import (
    api_tokens_t,
)


def token_digest(token: str) -> str:
    # surrogateescape: any str a header can decode to hashes instead of raising.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def insert_api_token(conn: Connection, name: str, token: str) -> int:
    query = insert(api_tokens_t).values(name=name, token_sha256=token_digest(token))
    return int(conn.execute(query.returning(api_tokens_t.c.id)).scalar_one())


def api_token_exists(conn: Connection, token: str) -> bool:
    query = select(api_tokens_t.c.id).where(
        api_tokens_t.c.token_sha256 == token_digest(token), api_tokens_t.c.revoked_at.is_(None)
    )
    return conn.execute(query).first() is not None


def list_api_tokens(conn: Connection) -> list[RowMapping]:
    """Every stored token's id, name and dates (never the digest), oldest first."""
    t = api_tokens_t.c
    query = select(t.id, t.name, t.created_at, t.revoked_at).order_by(t.id)
    return list(conn.execute(query).mappings())


def revoke_api_tokens(conn: Connection, name: str) -> list[int]:
    """Sets ``revoked_at`` on the live tokens named ``name``; returns their ids."""
    t = api_tokens_t.c
    query = (
        update(api_tokens_t)
        .where(t.name == name, t.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(t.id)
    )
    return sorted(int(i) for i in conn.execute(query).scalars())


def token_name_exists(conn: Connection, name: str) -> bool:
    found = conn.execute(select(api_tokens_t.c.id).where(api_tokens_t.c.name == name).limit(1))
    return found.first() is not None
