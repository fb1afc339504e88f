"""The contact registry on the real Postgres: its SQL agrees with the pure rules, uploads link
and refuse people, sends and webhooks teach it, operators change it over HTTP, and the
send-time check stops a person who opted out after the upload."""

from __future__ import annotations

import itertools
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from campaigns.domain.registry import (
    CREATING,
    SOURCE_PREFERENCES,
    SOURCE_REPLY,
    Change,
    Learned,
    Person,
    learn,
    person_id,
    standing_of,
    suppression,
)
from campaigns.storage import registry as registry_db
from schemas.api import CampaignCreate
from tests.integration.registry_support import learn as learn_now
from tests.integration.test_uploads import contacts, make_campaign, upload_bytes

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
DE = "+4915123456701"
DE2 = "+4915123456702"
DE3 = "+4915123456703"

KNOWN = Person(DE, first_seen_at=T0)
STARTS: list[Person | None] = [
    None,
    KNOWN,
    replace(KNOWN, opted_out=True, opted_out_at=T0, opt_out_source=SOURCE_REPLY),
    replace(KNOWN, opted_out=True, opted_out_at=T0, opt_out_source=SOURCE_PREFERENCES),
    replace(KNOWN, unavailable_since=T0, unavailable_code=131026, wa_id="w", last_sent_at=T0),
    replace(KNOWN, blocked_at=T0, blocked_reason="fraud", opted_in=True, opted_in_at=T0),
    replace(KNOWN, check_status="valid", checked_at=T0, wa_id="w0", opt_in_source="x"),
    Person(DE, first_seen_at=T0, removed_at=T0),
    replace(KNOWN, opted_out=True, opted_out_at=T0, opt_out_source=SOURCE_REPLY, removed_at=T0),
]
FACTS: list[Learned] = [
    Learned(Change.UNAVAILABLE, T1, code=1013),
    Learned(Change.OPTED_OUT, T1, source=SOURCE_REPLY),
    Learned(Change.OPTED_OUT, T1, source=SOURCE_PREFERENCES),
    Learned(Change.RESUMED, T1),
    Learned(Change.OPTED_IN, T1, source="web form"),
    Learned(Change.UPLOAD_OPT_IN, T1, source="upload 3", value=True),
    Learned(Change.UPLOAD_OPT_IN, T1, source="upload 3", value=False),
    Learned(Change.OPT_IN_WITHDRAWN, T1),
    Learned(Change.BLOCKED, T1, reason="spam"),
    Learned(Change.UNBLOCKED, T1),
    Learned(Change.REMOVED, T1),
    Learned(Change.SENT, T1, wa_id="w1"),
    Learned(Change.SENT, T0 - timedelta(hours=1)),
    Learned(Change.CHECKED, T1, check_status="invalid"),
    Learned(Change.SEEN, T1),
]


def insert_person(engine: Engine, person: Person) -> None:
    values = asdict(person)
    assert person.phone_e164 is not None
    values["id"] = person_id(person.phone_e164)
    columns = ", ".join(values)
    with engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO people ({columns}) VALUES ({', '.join(':' + c for c in values)})"),
            values,
        )


def read_person(engine: Engine, phone: str) -> Person | None:
    with engine.connect() as conn:
        row = registry_db.find_person(conn, [phone], None)
    return registry_db.person_of(row) if row is not None else None


Case = tuple[str, Person | None, Learned]


def seed_cases(db: Engine, prefix: str) -> list[Case]:
    """Every kind of record (stored under ``prefix`` numbers) with every change."""
    cases = []
    for n, (start, fact) in enumerate(itertools.product(STARTS, FACTS)):
        phone = f"{prefix}{n:06d}"
        if start is not None:
            insert_person(db, replace(start, phone_e164=phone))
        cases.append((phone, start, fact))
    return cases


def stored_after(phone: str, start: Person | None, fact: Learned) -> Person | None:
    """What the record must be after ``fact``: ``learn``'s answer, except that a change that
    makes no record leaves an invisible (removed) one untouched (nothing to find)."""
    before = replace(start, phone_e164=phone) if start is not None else None
    if before is not None and not before.visible and fact.change not in CREATING:
        return before
    return learn(before, phone, fact)


def test_the_sql_does_what_the_rules_say(db: Engine) -> None:
    """Every change on every kind of record, in one statement, against ``learn``."""
    cases = seed_cases(db, "+4915199")
    with db.begin() as conn:
        applied = registry_db.apply(conn, [(phone, fact) for phone, _, fact in cases])
    for phone, start, fact in cases:
        before = replace(start, phone_e164=phone) if start is not None else None
        expected = learn(before, phone, fact)
        assert read_person(db, phone) == stored_after(phone, start, fact), (phone, start, fact)
        assert (phone in applied.changed) == (expected != before and expected is not None)


def test_a_flush_of_sends_does_what_the_rules_say(db: Engine) -> None:
    """``apply_sends`` (dispatch's flush: accepted sends of people on record by the cheap
    statement, the rest by ``apply``), every change on every kind of record, against
    ``learn``; each number also gets a second send, earlier, which must not move it back."""
    cases = seed_cases(db, "+4915177")
    late = Learned(Change.SENT, T0 - timedelta(days=1))
    with db.begin() as conn:
        registry_db.apply_sends(conn, [(phone, fact) for phone, _, fact in cases])
    for phone, start, fact in cases:
        assert read_person(db, phone) == stored_after(phone, start, fact), (phone, start, fact)
    with db.begin() as conn:
        registry_db.apply_sends(conn, [(phone, late) for phone, _, _ in cases] * 2)
    for phone, start, fact in cases:
        expected = learn(stored_after(phone, start, fact), phone, late)
        assert read_person(db, phone) == expected, (phone, start, fact)


def test_a_wa_id_that_is_no_number_is_left_out(db: Engine) -> None:
    with db.begin() as conn:
        done = registry_db.apply(
            conn,
            [
                ("+" + "9" * 25, Learned(Change.OPTED_OUT, T0, source=SOURCE_REPLY)),
                (DE, Learned(Change.OPTED_OUT, T0, source=SOURCE_REPLY)),
            ],
        )
    assert done.changed == {DE}


def test_the_sql_refuses_whom_the_rules_refuse(db: Engine) -> None:
    """``storage.registry.refusal_code`` (upload and send time) against ``suppression``."""
    starts = [
        replace(KNOWN, unavailable_since=unavailable, blocked_at=blocked, opted_out=out, opted_in=opted)
        for unavailable, blocked, out, opted in itertools.product((None, T0), (None, T0), (False, True), (False, True))
    ]  # fmt: skip
    for n, person in enumerate(starts):
        insert_person(db, replace(person, phone_e164=f"+4915188{n:06d}"))
    with db.connect() as conn:
        for n, person in enumerate(starts):
            for require in (False, True):
                row = conn.execute(
                    text(
                        f"SELECT {registry_db.refusal_code(':r')} AS code FROM people p WHERE id = :id"
                    ),
                    {"r": require, "id": person_id(f"+4915188{n:06d}")},
                ).one()
                expected = suppression(standing_of(person), require_opt_in=require)
                assert row.code == (expected.value if expected else None), (person, require)


def test_changes_of_one_number_apply_in_order(db: Engine) -> None:
    facts = [
        (DE, Learned(Change.OPTED_OUT, T0, source=SOURCE_PREFERENCES)),
        (DE, Learned(Change.RESUMED, T1)),
        (DE, Learned(Change.BLOCKED, T1, reason="r")),
    ]
    with db.begin() as conn:
        registry_db.apply(conn, facts)
    person = read_person(db, DE)
    assert person is not None and not person.opted_out and person.blocked_reason == "r"


# --------------------------------------------------------------------------- uploads


def test_uploads_link_every_contact_to_its_person(db: Engine) -> None:
    campaign_id = make_campaign(db)
    upload_bytes(db, campaign_id, f"phone\n{DE}\nnot a number\n{DE}\n0151 23456702\n".encode())
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT phone_e164, person_id FROM contacts WHERE campaign_id = :c ORDER BY id"),
            {"c": campaign_id},
        ).all()
        people = conn.execute(text("SELECT id, phone_e164 FROM people ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [
        (DE, person_id(DE)),
        (None, None),
        (DE, person_id(DE)),
        (DE2, person_id(DE2)),
    ]
    assert [tuple(p) for p in people] == [(person_id(DE), DE), (person_id(DE2), DE2)]


def test_uploads_refuse_people_with_the_reason(db: Engine) -> None:
    learn_now(db, DE, Change.UNAVAILABLE, code=131026)
    learn_now(db, DE2, Change.BLOCKED, reason="fraud")
    learn_now(db, DE3, Change.OPTED_OUT, source="operator")
    campaign_id = make_campaign(db)
    upload = upload_bytes(db, campaign_id, f"phone\n{DE}\n{DE2}\n{DE3}\n+4915123456704\n".encode())
    assert upload.reasons == {"unavailable": 1, "blocked": 1, "opted_out": 1}
    assert [r["reason_code"] for r in contacts(db, campaign_id)] == [
        "unavailable",
        "blocked",
        "opted_out",
        None,
    ]


def test_a_person_made_meanwhile_by_another_transaction(db: Engine) -> None:
    """The chunk's plain insert meets a person another transaction is making: it waits, sees
    the conflict once that commits, and the chunk is stored again sharing the person."""
    import threading

    from tests.fixtures.processes import wait_for

    campaign_id = make_campaign(db)
    other = db.connect()
    other.execute(
        text("INSERT INTO people (id, phone_e164, opted_out, opt_out_source) "
             "VALUES (:id, :p, true, 'whatsapp reply')"),
        {"id": person_id(DE), "p": DE},
    )  # fmt: skip
    done: list[Any] = []
    upload = threading.Thread(
        target=lambda: done.append(upload_bytes(db, campaign_id, f"phone\n{DE}\n{DE2}\n".encode()))
    )
    upload.start()

    def waiting() -> bool:
        with db.connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%%INSERT INTO people%%'"
                    )
                ).scalar_one()
            )

    wait_for(waiting, timeout=20, what="the chunk to wait for the other transaction")
    other.commit()
    other.close()
    upload.join(timeout=30)
    assert done and done[0].status == "completed"
    # The second run saw the person the other transaction made (opted out meanwhile).
    assert done[0].reasons == {"opted_out": 1} and done[0].valid == 1
    assert [r["reason_code"] for r in contacts(db, campaign_id)] == ["opted_out", None]


def test_require_opt_in_and_the_opted_in_column(db: Engine) -> None:
    from campaigns.services import campaigns as campaign_service

    learn_now(db, DE3, Change.OPTED_IN, source="web form")
    body = CampaignCreate(name="optin", template="t", region="DE", require_opt_in=True)
    campaign_id = campaign_service.create_campaign(db, body).id
    data = f"phone,opted_in\n{DE},yes\n{DE2},no\n{DE3},\n+4915123456704,\n".encode()
    upload = upload_bytes(db, campaign_id, data)
    assert upload.reasons == {"not_opted_in": 2}
    assert [r["reason_code"] for r in contacts(db, campaign_id)] == [
        None,
        "not_opted_in",
        None,
        "not_opted_in",
    ]
    first = read_person(db, DE)
    assert first is not None and first.opted_in and first.opt_in_source == f"upload {upload.id}"
    second = read_person(db, DE2)
    assert second is not None and not second.opted_in


def test_an_upload_brings_a_removed_person_back(db: Engine) -> None:
    learn_now(db, DE, Change.UNAVAILABLE, code=131026)
    learn_now(db, DE, Change.REMOVED)
    campaign_id = make_campaign(db)
    upload = upload_bytes(db, campaign_id, f"phone\n{DE}\n".encode())
    assert upload.valid == 1
    person = read_person(db, DE)
    assert person is not None and person.removed_at is None and person.status is None


# --------------------------------------------------------------------------- HTTP


def get(api: TestClient, phone: str) -> Any:
    return api.get(f"/contacts/{phone.replace('+', '%2B')}")


def test_operators_change_a_person_over_http(api: TestClient, db: Engine) -> None:
    assert get(api, DE).status_code == 404
    blocked = api.post(f"/contacts/{DE}/block", json={"reason": "fraud"})
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["status"] == "BLOCKED" and blocked.json()["blocked_reason"] == "fraud"
    # Without the +, and as a wa_id: the same person.
    assert get(api, DE[1:]).json()["status"] == "BLOCKED"
    assert api.post(f"/contacts/{DE[1:]}/unblock").json()["status"] is None
    out = api.post(f"/contacts/%2B{DE[1:]}/opt-out", json={"source": "call centre"}).json()
    assert (out["opted_out"], out["opt_out_source"]) == (True, "call centre")
    back = api.post(f"/contacts/{DE}/opt-in", json={"source": "web form"}).json()
    assert (back["opted_out"], back["opted_in"], back["opt_in_source"]) == (
        False,
        True,
        "web form",
    )
    assert api.post(f"/contacts/{DE2}/unblock").status_code == 404
    bad = api.get("/contacts/not-a-phone")
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_phone"


def test_delete_clears_unavailable_but_never_an_opt_out(api: TestClient, db: Engine) -> None:
    learn_now(db, DE, Change.UNAVAILABLE, code=131026)
    learn_now(db, DE2, Change.UNAVAILABLE, code=131026)
    learn_now(db, DE2, Change.OPTED_OUT, source=SOURCE_REPLY)
    assert get(api, DE).json()["status"] == "UNAVAILABLE"

    gone = api.delete(f"/contacts/{DE}")
    assert gone.json() == {"phone_e164": DE, "removed": True, "opted_out": False}
    assert get(api, DE).status_code == 404
    assert api.delete(f"/contacts/{DE}").status_code == 404

    kept = api.delete(f"/contacts/{DE2}").json()
    assert kept["opted_out"] is True
    shown = get(api, DE2).json()  # the opt-out outlives the removal, and shows
    assert shown["status"] is None and shown["opted_out"] is True
    assert shown["opt_out_source"] == SOURCE_REPLY and shown["removed_at"] is not None

    campaign_id = make_campaign(db)
    upload = upload_bytes(db, campaign_id, f"phone\n{DE}\n{DE2}\n".encode())
    assert upload.reasons == {"opted_out": 1}
    assert get(api, DE).json()["campaigns"][0]["state"] == "initial"
    # Only the person's own opt-in clears it.
    assert api.post(f"/contacts/{DE2}/opt-in").json()["opted_out"] is False


def test_bulk_reports_each_item(api: TestClient, db: Engine) -> None:
    learn_now(db, DE2, Change.BLOCKED, reason="x")
    items = [DE, "garbage", DE2[1:], DE3, DE]
    report = api.post(
        "/contacts/bulk", json={"operation": "unblock", "contacts": items, "reason": "ok"}
    ).json()["results"]
    assert [(r["input"], r["result"]) for r in report] == [
        (DE, "NOT_FOUND"),
        ("garbage", "FAILURE"),
        (DE2[1:], "SUCCESS"),
        (DE3, "NOT_FOUND"),
        (DE, "NOT_FOUND"),
    ]
    assert report[2]["phone_e164"] == DE2 and report[1]["message"]
    blocked = api.post(
        "/contacts/bulk", json={"operation": "block", "contacts": [DE, DE3, DE], "reason": "r"}
    ).json()["results"]
    assert [r["result"] for r in blocked] == ["SUCCESS"] * 3
    assert get(api, DE3).json()["blocked_reason"] == "r"
    too_many = api.post("/contacts/bulk", json={"operation": "remove", "contacts": [DE] * 10_001})
    assert too_many.status_code == 422


def test_suppressed_counts_of_a_campaign(api: TestClient, db: Engine) -> None:
    learn_now(db, DE, Change.BLOCKED)
    campaign_id = make_campaign(db)
    upload_bytes(db, campaign_id, f"phone\n{DE}\n{DE2}\n".encode())
    body = api.get(f"/campaigns/{campaign_id}/suppressed").json()
    assert body["reasons"]["blocked"] == 1 and body["total"] == 1


def test_person_fields_are_all_shown(api: TestClient, db: Engine) -> None:
    learn_now(db, DE, Change.SENT, wa_id="4915123456701")
    shown = get(api, DE).json()
    assert {f.name for f in fields(Person)} - {"user_id"} <= set(shown)
    assert shown["wa_id"] == "4915123456701" and shown["last_sent_at"] is not None


@pytest.mark.parametrize("path", ["/contacts/check", "/contacts/bulk"])
def test_registry_routes_need_the_token(api: TestClient, path: str) -> None:
    api.headers.pop("Authorization")
    assert api.post(path, json={}).status_code == 401
    assert api.get(f"/contacts/{DE}").status_code == 401
