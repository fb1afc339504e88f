"""Migration 0006 on a database of its own: today's opt-outs (phones and ``user:`` keys) and
every contact's number move into ``people`` and nothing is lost; the downgrade gives the
opt-outs back."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from campaigns.runtime import embedded
from campaigns.storage import migrate

BEFORE = "0005_platform_2026"


@pytest.fixture
def old_database(stack: dict[str, str]) -> Iterator[tuple[str, Engine]]:
    name = f"wa_test_migration_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}"
    url = embedded.ensure_database(stack["PG_SERVER_URI"], name, recreate=True)
    migrate.upgrade(url, BEFORE)
    engine = create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()


def test_opt_outs_and_contacts_move_into_people(old_database: tuple[str, Engine]) -> None:
    url, engine = old_database
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO campaigns (id, name, default_region) VALUES (1, 'c', 'DE');"
                "INSERT INTO uploads (id, campaign_id, filename, spool_path, size_bytes) "
                "VALUES (1, 1, 'f', '/x', 1);"
                "INSERT INTO contacts (campaign_id, upload_id, line_no, phone_raw, phone_e164, "
                "state, created_at) VALUES "
                "(1, 1, 2, 'a', '+4915123456701', 'initial', '2026-01-02T00:00:00Z'),"
                "(1, 1, 3, 'b', NULL, 'invalid_record', now()),"
                "(1, 1, 4, 'c', '+4915123456702', 'invalid_record', now());"
                "INSERT INTO opt_outs (phone_e164, source, created_at) VALUES "
                "('+4915123456702', 'whatsapp reply', '2026-02-03T00:00:00Z'),"
                "('+4915123456709', 'user_preferences', now()),"
                "('user:US.123', 'user_preferences', now());"
            )
        )
    migrate.upgrade(url)
    with engine.connect() as conn:
        people = (
            conn.execute(
                text(
                    "SELECT id, phone_e164, user_id, opted_out, opt_out_source, opted_out_at, "
                    "first_seen_at FROM people ORDER BY phone_e164 NULLS LAST"
                )
            )
            .mappings()
            .all()
        )
        links = conn.execute(text("SELECT line_no, person_id FROM contacts ORDER BY line_no")).all()
    assert [
        (p["phone_e164"], p["user_id"], p["opted_out"], p["opt_out_source"]) for p in people
    ] == [
        ("+4915123456701", None, False, None),
        ("+4915123456702", None, True, "whatsapp reply"),
        ("+4915123456709", None, True, "user_preferences"),
        (None, "US.123", True, "user_preferences"),
    ]
    assert people[0]["id"] == 4915123456701 and people[3]["id"] < 0
    assert str(people[0]["first_seen_at"].date()) == "2026-01-02"
    assert str(people[1]["opted_out_at"].date()) == "2026-02-03"
    assert [tuple(r) for r in links] == [(2, 4915123456701), (3, None), (4, 4915123456702)]

    migrate.downgrade(url, BEFORE)
    with engine.connect() as conn:
        back = conn.execute(text("SELECT phone_e164, source FROM opt_outs ORDER BY 1")).all()
    assert [tuple(r) for r in back] == [
        ("+4915123456702", "whatsapp reply"),
        ("+4915123456709", "user_preferences"),
        ("user:US.123", "user_preferences"),
    ]
