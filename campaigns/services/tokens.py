"""API tokens: created, listed and revoked by the CLI, checked on every HTTP call."""

from __future__ import annotations

import secrets

from sqlalchemy import Engine, RowMapping

from campaigns.domain.refusals import NotFound
from campaigns.storage import tokens as tokens_db
from schemas.api import TokenCreated, TokenInfo


def create_api_token(engine: Engine, name: str) -> TokenCreated:
    token = "wac_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        token_id = tokens_db.insert_api_token(conn, name, token)
    return TokenCreated(id=token_id, name=name, token=token)


def _encoded(token: str) -> bytes:
    # Compared as bytes: compare_digest refuses a non-ASCII str (a TypeError, i.e. a 500).
    return token.encode("utf-8", "surrogateescape")


def token_is_valid(engine: Engine, configured: set[str], presented: str) -> bool:
    given = _encoded(presented)
    # Every configured token is compared (no early exit): the time does not tell which matched.
    matches = [secrets.compare_digest(given, _encoded(t)) for t in configured]
    if any(matches):
        return True
    with engine.connect() as conn:
        return tokens_db.api_token_exists(conn, presented)


def list_tokens(engine: Engine) -> list[TokenInfo]:
    """The stored tokens (from ``token create``), revoked ones included; never the token."""
    with engine.connect() as conn:
        rows = tokens_db.list_api_tokens(conn)
    return [_info(r) for r in rows]


def revoke_token(engine: Engine, name: str) -> list[TokenInfo]:
    """Revokes every live token named ``name``: the next request carrying one gets a 401.

    A name that was never created is a NotFound; one whose tokens are all revoked already
    revokes nothing and answers an empty list (revoking twice is not an error).
    """
    with engine.begin() as conn:
        if not tokens_db.token_name_exists(conn, name):
            raise NotFound("token", name)
        revoked = set(tokens_db.revoke_api_tokens(conn, name))
        rows = tokens_db.list_api_tokens(conn)
    return [_info(r) for r in rows if r["id"] in revoked]


def _info(row: RowMapping) -> TokenInfo:
    return TokenInfo(
        id=row["id"], name=row["name"], created_at=row["created_at"], revoked_at=row["revoked_at"]
    )
