"""Contact profiles over HTTP on the real Postgres: seed 004's schema, rule breakers, the
generation over PATCH / PUT / DELETE, reads under an older schema, If-Match, concurrent
PATCHes, the registry's opt-in behind ``opted_in``, and bodies that are not JSON."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from campaigns.domain.registry import Change
from campaigns.services import profiles
from tests.integration.registry_support import learn
from tests.unit.test_profile_schemas import SEED_004

DE = "+4915123456701"
DE2 = "+4915123456702"

AGE = {"name": "age", "display": "Age", "type": "INTEGER", "default": 2, "is_private": False}
RISK = {
    "name": "risk_profile",
    "display": "Risk",
    "type": "FLOAT",
    "default": 2.0,
    "is_private": False,
}


def schema(api: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/contacts/schemas", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def seed_v2() -> dict[str, Any]:
    body = copy.deepcopy(SEED_004)
    body["version"] = "0.0.2"
    body["fields"] += [AGE, RISK]
    return body


def test_seed_004_schema_is_answered_with_its_uuid(api: TestClient) -> None:
    created = schema(api, copy.deepcopy(SEED_004))
    assert created["version"] == "0.0.1-alpha"
    assert created["fields"] == SEED_004["fields"]
    assert len(created["uuid"]) == 36
    one = api.get(f"/contacts/schemas/{created['uuid']}")
    assert one.status_code == 200
    assert one.json() == created
    newer = schema(api, seed_v2())
    listed = api.get("/contacts/schemas").json()
    assert [s["uuid"] for s in listed] == [newer["uuid"], created["uuid"]]  # newest first
    assert api.get("/contacts/schemas/8d6a1f1e-2d3c-4b5a-9e8f-000000000000").status_code == 404
    assert api.get("/contacts/schemas/not-a-uuid").status_code == 404


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ([{**AGE, "name": "Age"}], "fields[0]: name 'Age' must be lower case"),
        ([{**AGE, "name": "opted_in"}], "fields[0] (opted_in): name is a reserved field"),
        ([AGE, AGE], "fields[1] (age): name is not unique"),
        ([{**AGE, "default": None}], 'only a field with "null": true'),
        ([{**AGE, "type": "BOOLEAN", "default": False, "null": True}], "can never be null"),
        ([{**AGE, "type": "ENUM", "default": "A"}], "an ENUM field needs enum"),
        (
            [{**AGE, "type": "ENUM", "default": "A", "enum": [{"value": "a", "display": "A"}]}],
            "must be upper case",
        ),
        ([{k: v for k, v in AGE.items() if k != "display"}], "display required"),
        ([{k: v for k, v in AGE.items() if k != "is_private"}], "is_private required"),
    ],
)
def test_schemas_that_break_a_rule_are_refused_and_nothing_is_stored(
    api: TestClient, db: Engine, fields: list[dict[str, Any]], says: str
) -> None:
    response = api.post("/contacts/schemas", json={"version": "1", "fields": fields})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_schema"
    assert says in response.json()["message"]
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM profile_schemas")).scalar_one() == 0


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b'"x"'])
def test_a_schema_body_that_is_not_a_json_object_is_refused(api: TestClient, body: bytes) -> None:
    response = api.post(
        "/contacts/schemas", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_schema"
    assert response.json()["message"]


def test_schemas_are_not_taken_for_a_phone(api: TestClient, db: Engine) -> None:
    assert api.get("/contacts/schemas").json() == []
    learn(db, DE, Change.SEEN)
    assert api.get(f"/contacts/{DE}").status_code == 200  # the registry's route still works


def test_a_known_person_without_a_profile_has_the_defaults_at_generation_0(
    api: TestClient, db: Engine
) -> None:
    created = schema(api, seed_v2())
    assert api.get(f"/contacts/{DE}/profile").status_code == 404
    learn(db, DE, Change.SEEN)
    response = api.get(f"/contacts/{DE}/profile")
    assert response.status_code == 200
    body = response.json()
    assert body["schema"] == created["uuid"]
    assert body["version"] == "0.0.2"
    assert body["generation"] == 0
    assert response.headers["ETag"] == '"0"'
    assert body["fields"] == {
        "name": None,
        "surname": None,
        "location": None,
        "language": None,
        "opted_in": False,
        "opted_in_at": None,
        "birthday": None,
        "whatsapp_profile_name": None,
        "whatsapp_id": None,
        "consent": False,
        "gender": "UNDISCLOSED",
        "age": 2,
        "risk_profile": 2.0,
    }
    # By wa_id (its digits), and with the + left out
    assert api.get(f"/contacts/{DE[1:]}/profile").json()["generation"] == 0


def test_generation_counts_every_change_over_patch_put_and_delete(
    api: TestClient, db: Engine
) -> None:
    schema(api, seed_v2())
    learn(db, DE, Change.SEEN)
    url = f"/contacts/{DE}/profile"
    patched = api.patch(url, json={"language": "ENG", "age": 5, "risk_profile": 3})
    assert patched.status_code == 200, patched.text
    assert patched.json()["generation"] == 1
    assert patched.json()["fields"]["risk_profile"] == 3.0
    patched = api.patch(url, json={"name": "Fizbo"}).json()
    assert patched["generation"] == 2
    assert (patched["fields"]["language"], patched["fields"]["age"]) == ("ENG", 5)  # inherited
    replaced = api.put(url, json={"name": "Fizbo"}).json()
    assert replaced["generation"] == 3
    assert replaced["fields"]["name"] == "Fizbo"
    assert replaced["fields"]["language"] is None  # left out: the default
    assert replaced["fields"]["age"] == 2
    reset = api.delete(url)
    assert reset.status_code == 200
    assert reset.json() == {}
    after = api.get(url).json()
    assert after["generation"] == 4
    assert after["fields"]["name"] is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{nope", "the body is not JSON"),
        (b"", "the body is not JSON"),
        (b"[1]", "the body must be a JSON object"),
        (b'{"age": "x"}', "age: expected INTEGER, got 'x'"),
        (b'{"shoe_size": 44}', "'shoe_size': not a field of the newest schema"),
        (b'{"opted_in": null}', "opted_in: may not be null"),
        (b'{"location": {"latitude": 100, "longitude": 0}}', "location: expected LOCATION"),
        (b'{"whatsapp_id": "123"}', "whatsapp_id: kept from WhatsApp, read-only"),
    ],
)
def test_an_invalid_write_is_refused_and_changes_nothing(
    api: TestClient, db: Engine, body: bytes, says: str
) -> None:
    schema(api, seed_v2())
    learn(db, DE, Change.SEEN)
    url = f"/contacts/{DE}/profile"
    api.patch(url, json={"age": 7})
    for method in ("PATCH", "PUT"):
        response = api.request(
            method, url, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_profile"
        assert says in response.json()["message"]
    after = api.get(url).json()
    assert after["generation"] == 1
    assert after["fields"]["age"] == 7


def test_writes_are_checked_against_the_newest_schema_only(api: TestClient, db: Engine) -> None:
    old = schema(api, seed_v2())
    learn(db, DE, Change.SEEN)
    url = f"/contacts/{DE}/profile"
    assert api.patch(url, json={"age": 9, "gender": "FEMALE"}).status_code == 200
    new = schema(api, {"version": "0.0.3", "fields": [AGE]})  # drops gender, consent, risk
    refused = api.patch(url, json={"gender": "MALE"})
    assert refused.status_code == 422
    assert new["uuid"] in refused.json()["message"]
    # The old profile is not rewritten: the older schema still reads gender
    under_old = api.get(url, params={"schema": old["uuid"]}).json()
    assert under_old["schema"] == old["uuid"]
    assert under_old["fields"]["gender"] == "FEMALE"
    under_new = api.get(url).json()
    assert "gender" not in under_new["fields"]
    assert under_new["fields"]["age"] == 9
    assert under_new["schema"] == new["uuid"]
    with db.connect() as conn:
        stored = conn.execute(text("SELECT schema_uuid::text FROM profiles")).scalar_one()
    assert stored == old["uuid"]  # written under the old one, never rewritten
    assert api.patch(url, json={"age": 10}).status_code == 200
    with db.connect() as conn:
        stored = conn.execute(text("SELECT schema_uuid::text FROM profiles")).scalar_one()
    assert stored == new["uuid"]
    assert (
        api.get(url, params={"schema": "8d6a1f1e-2d3c-4b5a-9e8f-000000000000"}).status_code == 404
    )


def test_if_match_refuses_a_stale_generation(api: TestClient, db: Engine) -> None:
    schema(api, seed_v2())
    learn(db, DE, Change.SEEN)
    url = f"/contacts/{DE}/profile"
    assert api.patch(url, json={"age": 3}, headers={"If-Match": "0"}).status_code == 200
    stale = api.patch(url, json={"age": 4}, headers={"If-Match": "0"})
    assert stale.status_code == 412
    assert stale.json()["code"] == "precondition_failed"
    assert "(1)" in stale.json()["message"]
    assert api.put(url, json={}, headers={"If-Match": '"1"'}).status_code == 200
    assert api.delete(url, headers={"If-Match": "1"}).status_code == 412
    assert api.delete(url, headers={"If-Match": "2"}).status_code == 200
    assert api.patch(url, json={}, headers={"If-Match": "soon"}).status_code == 422
    assert api.get(url).json()["generation"] == 3


def test_concurrent_patches_all_apply(db: Engine) -> None:
    fields = [{**AGE, "name": f"f{i}"} for i in range(8)]
    profiles.create_schema(db, {"version": "1", "fields": fields})
    learn(db, DE, Change.SEEN)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def patch(i: int) -> None:
        try:
            barrier.wait()
            for round_ in range(5):
                profiles.write_profile(
                    db, DE, profiles.WriteMode.PATCH, {f"f{i}": i * 100 + round_}
                )
        except BaseException as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    out = profiles.get_profile(db, DE)
    assert out.generation == 40
    assert {k: v for k, v in out.fields.items() if k.startswith("f")} == {
        f"f{i}": i * 100 + 4 for i in range(8)
    }


def test_a_write_makes_the_person_a_delete_does_not(api: TestClient, db: Engine) -> None:
    schema(api, seed_v2())
    assert api.delete(f"/contacts/{DE}/profile").status_code == 404
    made = api.patch(f"/contacts/{DE[1:]}/profile", json={"name": "Anna"})
    assert made.status_code == 200
    assert made.json()["generation"] == 1
    assert api.get(f"/contacts/{DE}").status_code == 200  # the registry knows the person now
    assert api.patch("/contacts/12345678901234/profile", json={}).status_code == 422
    assert api.get("/contacts/hello/profile").json()["code"] == "invalid_phone"


def test_opted_in_is_the_registry_s_opt_in(api: TestClient, db: Engine) -> None:
    learn(db, DE, Change.SEEN)
    url = f"/contacts/{DE}/profile"
    opted = api.patch(url, json={"opted_in": True}).json()
    assert opted["fields"]["opted_in"] is True
    assert opted["fields"]["opted_in_at"].endswith("Z")
    person = api.get(f"/contacts/{DE}").json()
    assert person["opted_in"] is True
    assert person["opt_in_source"] == "profile"
    # The registry's own opt-out / opt-in show in the profile
    api.post(f"/contacts/{DE2}/opt-in", json={"source": "web form"})
    assert api.get(f"/contacts/{DE2}/profile").json()["fields"]["opted_in"] is True
    # A reset withdraws the opt-in (the default), and leaves an opt-out alone
    api.post(f"/contacts/{DE}/opt-out")
    assert api.delete(url).status_code == 200
    person = api.get(f"/contacts/{DE}").json()
    assert (person["opted_in"], person["opted_in_at"], person["opted_out"]) == (False, None, True)
    assert api.get(url).json()["fields"]["opted_in"] is False


def test_the_whatsapp_fields_come_from_the_registry(api: TestClient, db: Engine) -> None:
    learn(db, DE, Change.SENT, wa_id="4915123456701")
    with db.begin() as conn:
        conn.execute(text("UPDATE people SET whatsapp_profile_name = 'Anna B'"))
    fields = api.get(f"/contacts/{DE}/profile").json()["fields"]
    assert fields["whatsapp_id"] == "4915123456701"
    assert fields["whatsapp_profile_name"] == "Anna B"
    same = {"whatsapp_id": "4915123456701", "whatsapp_profile_name": "Anna B", "name": "A"}
    assert api.put(f"/contacts/{DE}/profile", json=same).status_code == 200


def test_a_removed_person_loses_the_profile(api: TestClient, db: Engine) -> None:
    schema(api, seed_v2())
    url = f"/contacts/{DE}/profile"
    api.patch(url, json={"name": "Anna", "age": 30})
    with db.begin() as conn:
        conn.execute(text("UPDATE people SET whatsapp_profile_name = 'Anna B'"))
    assert api.delete(f"/contacts/{DE}").status_code == 200
    assert api.get(url).status_code == 404
    back = api.patch(url, json={"surname": "B"}).json()
    assert back["generation"] == 1
    assert back["fields"]["name"] is None
    assert back["fields"]["whatsapp_profile_name"] is None


def test_inbound_messages_fill_the_whatsapp_profile_name(api: TestClient, db: Engine) -> None:
    from tests.integration.test_webhook_people import body
    from tests.integration.test_webhooks import deliver, text_message

    learn(db, DE, Change.SEEN)
    hello = text_message(DE[1:], "hello", wamid="wamid.in.hello")
    contacts = [{"profile": {"name": "Anna B"}, "wa_id": DE[1:]}]
    deliver(db, body(contacts=contacts, messages=[hello]))
    assert api.get(f"/contacts/{DE}/profile").json()["fields"]["whatsapp_profile_name"] == "Anna B"
    # A new name replaces it; a person the registry does not know gets no record from it
    renamed = text_message(DE[1:], "hi", wamid="wamid.in.hi")
    stranger = text_message(DE2[1:], "hi", wamid="wamid.in.stranger")
    contacts = [
        {"profile": {"name": "Anna C"}, "wa_id": DE[1:]},
        {"profile": {"name": "Who"}, "wa_id": DE2[1:]},
    ]
    deliver(db, body(contacts=contacts, messages=[renamed, stranger]))
    assert api.get(f"/contacts/{DE}/profile").json()["fields"]["whatsapp_profile_name"] == "Anna C"
    assert api.get(f"/contacts/{DE2}/profile").status_code == 404
