"""Uploads fill profiles and templates use them, on the real Postgres: good and bad profile
values, PATCH semantics, private fields kept out of exports and the contacts API, template
variables filled from the profile at upload (missing_variable) and at send time."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from campaigns.dev.simulator.runner import RunningSimulator
from campaigns.domain.csv_intake import RefusalCode, UploadRefused
from campaigns.domain.dispatch import SendJob
from campaigns.domain.outcomes import SendResult
from campaigns.domain.states import ContactState
from campaigns.services import admin, campaign_contacts, profiles
from campaigns.services import campaigns as campaign_service
from campaigns.services.dispatch.chain import run_chain
from campaigns.services.dispatch.ports import MessageTransport
from schemas.api import CampaignCreate
from tests.integration.dispatch_support import SENDER, SendPorts, send_ports, states, sync_flags
from tests.integration.test_uploads import contacts, make_campaign, upload_bytes
from tests.unit.test_profile_schemas import SEED_004

A = "+4915123456701"
B = "+4915123456702"
C = "+4915123456703"
D = "+4915123456704"

AGE = {"name": "age", "display": "Age", "type": "INTEGER", "default": 0, "is_private": False}
NICK = {
    "name": "nickname",
    "display": "Nickname",
    "type": "STRING",
    "default": None,
    "null": True,
    "is_private": False,
}


@pytest.fixture
def schema(db: Engine) -> str:
    body = copy.deepcopy(SEED_004)
    body["fields"] += [AGE, NICK]
    return profiles.create_schema(db, body).uuid


def profile(db: Engine, phone: str) -> tuple[int, dict[str, Any]]:
    out = profiles.get_profile(db, phone)
    return out.generation, out.fields


def test_columns_named_like_fields_fill_profiles_and_a_bad_value_refuses_its_row_alone(
    db: Engine, schema: str
) -> None:
    campaign_id = make_campaign(db)
    data = (
        "phone,Name,age,gender,consent,code\n"
        f"{A},Anna,31,female,yes,X1\n"
        f"{B},Ben,x,male,no,X2\n"  # age is no number: refused alone
        f"{C},Cleo,40,unknown,no,X3\n"  # no such gender
        f"{D},Dan,,,,X4\n"  # blank cells leave the fields as they are
    ).encode()
    upload = upload_bytes(db, campaign_id, data)
    assert (upload.valid, upload.invalid) == (2, 2)
    assert upload.reasons == {"profile_invalid": 2}
    rows = {r["phone_raw"]: r for r in contacts(db, campaign_id)}
    assert rows[B]["state"] == "invalid_record"
    assert rows[B]["reason_code"] == "profile_invalid"
    assert rows[B]["reason"] == "age: expected INTEGER, got 'x'"
    assert rows[C]["reason"].startswith("gender: expected ENUM (one of MALE, FEMALE")
    generation, fields = profile(db, A)
    assert generation == 1
    assert (fields["name"], fields["age"], fields["gender"], fields["consent"]) == (
        "Anna",
        31,
        "FEMALE",
        True,
    )
    assert profile(db, D)[1]["name"] == "Dan"
    assert profile(db, D)[1]["age"] == 0  # the default: the cell was blank
    with pytest.raises(Exception, match="not found"):
        profiles.get_profile(db, B)  # a refused row writes nothing (and made no person)
    # PATCH semantics: a second upload changes what it names and keeps the rest
    other = make_campaign(db)
    upload_bytes(db, other, f"phone,age\n{A},32\n".encode())
    generation, fields = profile(db, A)
    assert (generation, fields["age"], fields["name"], fields["gender"]) == (
        2,
        32,
        "Anna",
        "FEMALE",
    )


def test_a_repeated_number_keeps_the_first_row_s_profile(db: Engine, schema: str) -> None:
    campaign_id = make_campaign(db)
    upload_bytes(db, campaign_id, f"phone,nickname\n{A},first\n{A},second\n".encode())
    assert profile(db, A)[0] == 1
    assert profile(db, A)[1]["nickname"] == "first"
    # A later chunk of the same file repeating the number does not write either
    other = make_campaign(db)
    upload_bytes(db, other, f"phone,nickname\n{B},one\n{A},x\n{A},y\n".encode(), chunk_rows=1)
    assert profile(db, A)[1]["nickname"] == "x"
    assert profile(db, A)[0] == 2


def test_private_fields_never_leave_the_profile_api(
    db: Engine, schema: str, api: TestClient
) -> None:
    campaign_id = make_campaign(db)
    data = f"phone,name,consent\n{A},Anna,yes\n{B},Ben,maybe\n".encode()
    upload = upload_bytes(db, campaign_id, data)
    assert upload.reasons == {"profile_invalid": 1}
    rows = {r["phone_raw"]: r for r in contacts(db, campaign_id)}
    assert rows[A]["variables"] == {"name": "Anna"}  # consent is not stored with the contact
    # A bad private value is not repeated in the reason either (reasons are exported)
    assert rows[B]["reason"] == "consent: expected BOOLEAN (the value is private: not shown)"
    exported = "".join(campaign_contacts.export_contacts_csv(db, campaign_id))
    assert "yes" not in exported
    assert "maybe" not in exported
    valid = "".join(
        campaign_contacts.export_contacts_csv(db, campaign_id, states=[ContactState.INITIAL])
    )
    assert "consent" not in valid
    listed = api.get(f"/campaigns/{campaign_id}/contacts").json()["items"]
    assert [item["variables"] for item in listed] == [{"name": "Anna"}, {"name": "Ben"}]
    assert "yes" not in str(listed)
    assert "consent" not in api.get(f"/contacts/{A}").text
    export = api.get(f"/campaigns/{campaign_id}/contacts.csv", params={"state": "initial"})
    assert export.status_code == 200
    assert A in export.text
    assert "consent" not in export.text
    # ... and the profile API shows it
    assert api.get(f"/contacts/{A}/profile").json()["fields"]["consent"] is True


def test_a_template_variable_that_is_a_profile_field_needs_no_column(
    db: Engine, schema: str
) -> None:
    campaign_id = make_campaign(db, variables=("nickname", "code"))
    profiles.write_profile(db, A, profiles.WriteMode.PATCH, {"nickname": "Ani"})
    data = f"phone,code\n{A},X1\n{B},X2\n".encode()  # no nickname column
    upload = upload_bytes(db, campaign_id, data)
    rows = {r["phone_raw"]: r for r in contacts(db, campaign_id)}
    assert rows[A]["state"] == "initial"
    assert rows[B]["reason_code"] == "missing_variable"
    assert rows[B]["reason"] == (
        "missing template variable: nickname (neither in the file nor the profile)"
    )
    assert upload.reasons == {"missing_variable": 1}
    # With the column, a blank cell falls back to the profile; a value needs none
    again = make_campaign(db, variables=("nickname",))
    data = f"phone,nickname\n{A},\n{C},\n{D},Dee\n".encode()
    upload_bytes(db, again, data)
    rows = {r["phone_raw"]: r for r in contacts(db, again)}
    assert [rows[p]["reason_code"] for p in (A, C, D)] == [None, "missing_variable", None]
    # A variable that is no profile field still needs its column: refused whole at once
    plain = make_campaign(db, variables=("coupon",))
    with pytest.raises(UploadRefused) as refused:
        upload_bytes(db, plain, f"phone\n{A}\n".encode())
    assert refused.value.code == RefusalCode.MISSING_VARIABLE_COLUMN


def test_a_field_with_a_default_always_fills_its_variable(db: Engine, schema: str) -> None:
    campaign_id = make_campaign(db, variables=("gender", "age"))
    upload = upload_bytes(db, campaign_id, f"phone\n{A}\n".encode())
    assert (upload.valid, upload.invalid) == (1, 0)


class Recording:
    """The transport that sends, and what each message carried."""

    def __init__(self, inner: MessageTransport) -> None:
        self.inner = inner
        self.jobs: list[SendJob] = []

    async def send(self, job: SendJob) -> SendResult:
        self.jobs.append(job)
        return await self.inner.send(job)


@pytest.fixture
def ports(sim: RunningSimulator) -> Iterator[SendPorts]:
    with send_ports(sim, timeout_s=2.0) as p:
        yield p


def test_send_time_values_come_from_the_profile(db: Engine, schema: str, ports: SendPorts) -> None:
    body = CampaignCreate(
        name="profiles",
        template="bf_offer",
        region="DE",
        body_variables=["nickname", "gender", "code", "whatsapp_profile_name"],
        phone_number_id=SENDER,
    )
    campaign_id = campaign_service.create_campaign(db, body).id
    profiles.write_profile(db, A, profiles.WriteMode.PATCH, {"nickname": "Ani"})
    profiles.write_profile(db, B, profiles.WriteMode.PATCH, {"nickname": "Bee", "gender": "MALE"})
    with db.begin() as conn:
        conn.execute(text("UPDATE people SET whatsapp_profile_name = 'Anna WA'"))
    data = f"phone,code,nickname\n{A},X1,\n{B},X2,Bert\n".encode()
    assert upload_bytes(db, campaign_id, data).valid == 2
    # The profile changes after the upload: the send takes the value of the send time
    profiles.write_profile(db, A, profiles.WriteMode.PATCH, {"nickname": "Annie"})
    admin.start_campaign(db, sync_flags(), campaign_id)
    recording = Recording(ports.transport)
    ports.run(run_chain(db, campaign_id, ports.gate, recording, default_sender=SENDER))
    assert set(states(db, campaign_id).values()) == {"sent"}
    sent = {job.to_e164: job.body_params for job in recording.jobs}
    assert sent == {
        A: ("Annie", "UNDISCLOSED", "X1", "Anna WA"),  # blank cell: the profile's, now
        B: ("Bert", "MALE", "X2", "Anna WA"),  # the file's value wins over the profile's
    }


def test_a_chunk_racing_a_new_profile_merges_into_it(db: Engine, schema: str) -> None:
    """A profile another transaction makes while a chunk writes: the chunk's plain insert
    fails on it, and its patches merge in instead (none lost, the rest of the chunk kept)."""
    import threading

    from campaigns.domain.registry import Change
    from campaigns.storage import profiles as profiles_db
    from tests.integration.registry_support import learn

    learn(db, A, Change.SEEN)
    learn(db, B, Change.SEEN)
    docs = json.dumps({A[1:]: {"age": 5}, B[1:]: {"age": 6}})
    other = db.connect()
    other.begin()
    other.execute(
        text('INSERT INTO profiles (person_id, fields) VALUES (:p, \'{"nickname": "x"}\')'),
        {"p": int(A[1:])},
    )
    done = threading.Event()

    def chunk() -> None:
        with db.begin() as conn:
            profiles_db.patch_many(conn, schema, docs)
        done.set()

    worker = threading.Thread(target=chunk)
    worker.start()
    assert not done.wait(0.5)  # waits for the other transaction's profile
    other.commit()
    other.close()
    worker.join(10)
    assert done.is_set()
    generation, fields = profile(db, A)
    assert (generation, fields["age"], fields["nickname"]) == (1, 5, "x")
    assert profile(db, B)[1]["age"] == 6
