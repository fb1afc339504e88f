"""Bearer tokens: compared as bytes (a non-ASCII one is a 401, not a 500), revoked at once."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from campaigns.domain.refusals import NotFound
from campaigns.services import tokens


@pytest.mark.parametrize(
    "bearer",
    ["tést-token", "токен", "\u00ff" * 40, "wac_" + "é" * 43],
)
def test_a_non_ascii_bearer_is_refused_with_401(api: TestClient, bearer: str) -> None:
    api.headers.pop("Authorization")
    # httpx sends header values as latin-1 or UTF-8 bytes; either way the server decodes a
    # non-ASCII str, which compare_digest refused with a TypeError (a 500).
    raw = f"Bearer {bearer}".encode()
    response = api.get("/campaigns", headers=[(b"Authorization", raw)])
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_token_stops_working_at_once(api: TestClient, db: Engine) -> None:
    ops = tokens.create_api_token(db, "ops")
    other = tokens.create_api_token(db, "ci")
    api.headers.pop("Authorization")
    ops_auth = {"Authorization": f"Bearer {ops.token}"}
    assert api.get("/campaigns", headers=ops_auth).status_code == 200

    revoked = tokens.revoke_token(db, "ops")
    assert [t.id for t in revoked] == [ops.id]
    assert revoked[0].revoked_at is not None

    assert api.get("/campaigns", headers=ops_auth).status_code == 401
    assert (
        api.get("/campaigns", headers={"Authorization": f"Bearer {other.token}"}).status_code == 200
    )

    listed = {t.name: t for t in tokens.list_tokens(db)}
    assert set(listed) == {"ops", "ci"}
    assert listed["ops"].revoked_at is not None and listed["ci"].revoked_at is None
    assert "token" not in listed["ops"].model_dump()  # a listing never shows a token

    # Revoking twice revokes nothing more; an unknown name is a refusal.
    assert tokens.revoke_token(db, "ops") == []
    with pytest.raises(NotFound) as missing:
        tokens.revoke_token(db, "nobody")
    assert missing.value.code == "token_not_found"


def test_revoke_covers_every_live_token_of_the_name(api: TestClient, db: Engine) -> None:
    first = tokens.create_api_token(db, "rotated")
    second = tokens.create_api_token(db, "rotated")
    assert {t.id for t in tokens.revoke_token(db, "rotated")} == {first.id, second.id}
    api.headers.pop("Authorization")
    for created in (first, second):
        auth = {"Authorization": f"Bearer {created.token}"}
        assert api.get("/campaigns", headers=auth).status_code == 401
