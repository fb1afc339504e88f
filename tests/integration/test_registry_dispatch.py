"""The registry where dispatch meets it, on the real Postgres, Redis and the simulator: what a
send's answer teaches, the check as each gate group opens, the contacts check (API, cache,
no_wait, without a provider) and a --check-contacts campaign's check before its first send."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from campaigns.dev.simulator import RunningSimulator
from campaigns.domain.registry import SOURCE_OPTED_OUT_CODE, SOURCE_REPLY, Change, PersonStatus
from campaigns.runtime.contact_checks import make_checker
from campaigns.runtime.stores import resolve
from campaigns.services import admin, contact_checks
from campaigns.services import campaigns as campaign_service
from campaigns.services.dispatch.batch import claim_batch
from campaigns.services.dispatch.plan import load_plan
from schemas.api import CampaignCreate
from tests.conftest import exported
from tests.integration.dispatch_support import (
    SENDER,
    SendPorts,
    campaign_with_contacts,
    chain,
    contact_rows,
    phone,
    send_claimed,
    send_ports,
    states,
    sync_flags,
)
from tests.integration.registry_support import learn
from tests.integration.test_metrics import listener_url
from tests.integration.test_registry import read_person
from tests.integration.test_uploads import upload_bytes


@pytest.fixture
def ports(sim: RunningSimulator) -> Iterator[SendPorts]:
    with send_ports(sim, timeout_s=1.0) as p:
        yield p


def test_a_send_answer_teaches_the_registry(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    sim.update_config(explicit={phone(1)[1:]: 131026, phone(2)[1:]: 131050, phone(3)[1:]: 1013})
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(5)])
    admin.start_campaign(db, sync_flags(), campaign_id)
    chain(db, campaign_id, ports, max_s=0)

    first = read_person(db, phone(1))
    assert first is not None and first.status is PersonStatus.UNAVAILABLE
    assert first.unavailable_code == 131026
    third = read_person(db, phone(3))
    assert third is not None and third.unavailable_code == 1013
    second = read_person(db, phone(2))
    assert second is not None and second.opt_out_source == SOURCE_OPTED_OUT_CODE
    sent = read_person(db, phone(4))
    assert sent is not None and sent.last_sent_at is not None and sent.wa_id == phone(4)[1:]

    # The next campaign refuses them at upload.
    later = campaign_service.create_campaign(
        db, CampaignCreate(name="next", template="bf_offer", region="DE")
    ).id
    numbers = "\n".join(phone(i) for i in range(5))
    upload = upload_bytes(db, later, f"phone\n{numbers}\n".encode())
    assert upload.reasons == {"unavailable": 2, "opted_out": 1}


def test_a_person_refused_after_the_upload_is_not_sent(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    numbers = [phone(i) for i in range(6)]
    campaign_id = campaign_with_contacts(db, numbers, rate=1000)
    admin.start_campaign(db, sync_flags(), campaign_id)
    plan = load_plan(db, campaign_id, SENDER)
    assert plan is not None
    claimed = claim_batch(db, plan, lease_margin_s=60)
    # After the claim, before the groups open: a STOP, a block, a 131026 elsewhere.
    learn(db, phone(1), Change.OPTED_OUT, source=SOURCE_REPLY)
    learn(db, phone(2), Change.BLOCKED, reason="fraud")
    learn(db, phone(3), Change.UNAVAILABLE, code=131026)
    reports = send_claimed(db, plan, claimed, ports)

    suppressed = sum((r.suppressed for r in reports), Counter[str]())
    assert suppressed == {"opted_out": 1, "blocked": 1, "unavailable": 1}
    assert sim.stats()["requests_total"] == 3
    assert set(sim.stats()["accepted_by_recipient"]) == {phone(i)[1:] for i in (0, 4, 5)}
    rows = {r["phone_e164"]: r for r in contact_rows(db, campaign_id)}
    for index, code in ((1, "opted_out"), (2, "blocked"), (3, "unavailable")):
        row = rows[phone(index)]
        assert (row["state"], row["reason_code"], row["attempts"]) == ("sending_failed", code, 0)
    with db.connect() as conn:
        events = conn.execute(
            text("SELECT count(*) FROM contact_events WHERE source = 'registry'")
        ).scalar_one()
    assert events == 3


def test_require_opt_in_is_checked_at_send_time_too(
    db: Engine, sim: RunningSimulator, ports: SendPorts
) -> None:
    for i in range(2):
        learn(db, phone(i), Change.OPTED_IN, source="web")
    body = CampaignCreate(
        name="o", template="bf_offer", region="DE", require_opt_in=True, phone_number_id=SENDER
    )
    campaign_id = campaign_service.create_campaign(db, body).id
    upload_bytes(db, campaign_id, f"phone\n{phone(0)}\n{phone(1)}\n".encode())
    learn(db, phone(1), Change.UPLOAD_OPT_IN, source="upload 99", value=False)
    admin.start_campaign(db, sync_flags(), campaign_id)
    chain(db, campaign_id, ports, max_s=0)
    assert states(db, campaign_id) == {phone(0): "sent", phone(1): "sending_failed"}


def test_a_failed_webhook_with_131026_makes_the_person_unavailable(db: Engine) -> None:
    from tests.integration.test_webhooks import deliver, envelope, status

    failed = status("wamid.x", "failed", recipient="4915123456701", code=131026)
    deliver(db, envelope(statuses=[failed]))
    person = read_person(db, "+4915123456701")
    assert person is not None and person.status is PersonStatus.UNAVAILABLE


# --------------------------------------------------------------------------- contacts check


@pytest.fixture
def checking(db: Engine, sim: RunningSimulator) -> Iterator[RunningSimulator]:
    """The API's settings pointed at the simulator's contacts endpoint."""
    env = {
        "WHATSAPP_CONTACTS_URL": sim.base_url,
        "WHATSAPP_TOKEN": sim.config.access_token,
        "CONTACT_CHECK_RATE_PER_S": "1000",
    }
    with exported({**env, **_stack_env()}):
        yield sim


def _stack_env() -> dict[str, str]:
    import os

    return {k: os.environ[k] for k in ("DATABASE_URL", "REDIS_URL", "DATA_DIR", "API_TOKENS")}


def _api() -> TestClient:
    from campaigns.api.app import create_app
    from tests.conftest import API_TOKEN

    return TestClient(create_app(), headers={"Authorization": f"Bearer {API_TOKEN}"})


def check(client: TestClient, contacts: list[Any], **body: Any) -> list[dict[str, Any]]:
    response = client.post("/contacts/check", json={"contacts": contacts, **body})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["contacts"]
    return items


def test_the_check_answers_in_order_and_caches(checking: RunningSimulator) -> None:
    checking.update_config(explicit={"4915123456702": 131026})
    inputs = ["+49 151 23456701", "+4915123456702", "call me", 4915123456703]
    with _api() as client:
        first = check(client, inputs, blocking="wait")
        assert [(i["input"], i["status"]) for i in first] == [
            ("+49 151 23456701", "valid"),
            ("+4915123456702", "invalid"),
            ("call me", "failed"),
            (4915123456703, "valid"),
        ]
        assert first[0]["wa_id"] == "4915123456701" and first[2]["message"]
        assert checking.stats()["contacts_checked_total"] == 3
        again = check(client, inputs, blocking="wait")
        assert [i["status"] for i in again] == [i["status"] for i in first]
        assert checking.stats()["contacts_checked_total"] == 3  # all from the registry
        check(client, inputs[:1], blocking="wait", force_check=True)
        assert checking.stats()["contacts_checked_total"] == 4
        metrics = httpx.get(listener_url(client)).text
    assert 'wa_contact_checks_total{cached="true",status="valid"} 2.0' in metrics
    person = read_person(resolve().engine, "+4915123456702")
    assert person is not None and person.check_status == "invalid"
    assert person.status is None  # a check never makes anyone UNAVAILABLE


def test_no_wait_answers_processing_and_a_task_resolves(
    checking: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.contact_checks as tasks

    queued: list[tuple[list[str], bool]] = []
    monkeypatch.setattr(
        tasks.resolve_checks, "delay", lambda numbers, force: queued.append((numbers, force))
    )
    with _api() as client:
        first = check(client, ["+4915123456701", "+4915123456702"], blocking="no_wait")
        assert [i["status"] for i in first] == ["processing", "processing"]
        check(client, ["+4915123456701"], blocking="no_wait")  # queued once only
        assert queued == [(["+4915123456701", "+4915123456702"], False)]
        tasks.resolve_checks.run(*queued[0])  # what the worker runs
        after = check(client, ["+4915123456701", "+4915123456702"], blocking="no_wait")
    assert [i["status"] for i in after] == ["valid", "valid"]
    assert checking.stats()["contacts_checked_total"] == 2


def test_repurposed_endpoint_says_valid_for_everyone(checking: RunningSimulator) -> None:
    checking.update_config(contacts_mode="repurposed", explicit={"4915123456702": 131026})
    with _api() as client:
        items = check(client, ["+4915123456702"], blocking="wait")
    assert (items[0]["status"], items[0]["wa_id"]) == ("valid", "4915123456702")


def test_without_a_provider_the_registry_answers(db: Engine, api: TestClient) -> None:
    learn(db, "+4915123456701", Change.UNAVAILABLE, code=131026)
    items = check(api, ["+4915123456701", "+4915123456702"], blocking="wait")
    assert [i["status"] for i in items] == ["invalid", "failed"]
    assert "WHATSAPP_CONTACTS_URL" in items[1]["message"]


def test_a_check_contacts_campaign_checks_before_its_first_send(
    checking: RunningSimulator, ports: SendPorts
) -> None:
    engine = resolve().engine
    checking.update_config(explicit={phone(1)[1:]: 131026})
    body = CampaignCreate(
        name="checked",
        template="bf_offer",
        region="DE",
        check_contacts=True,
        phone_number_id=SENDER,
        rate_per_s=1000,
    )
    campaign_id = campaign_service.create_campaign(engine, body).id
    upload_bytes(engine, campaign_id, f"phone\n{phone(0)}\n{phone(1)}\n{phone(2)}\n".encode())
    admin.start_campaign(engine, sync_flags(), campaign_id)
    assert not chain(engine, campaign_id, ports, max_s=0)  # waits for its check
    assert checking.stats()["requests_total"] == 0

    async def step() -> contact_checks.CampaignCheckStep:
        client = aioredis.Redis.from_url(resolve().redis_url)
        try:
            return await contact_checks.check_campaign(
                make_checker(resolve(), client),
                campaign_id,
                after_id=0,
                budget_s=5,
                sender_id=SENDER,
                clock=time.monotonic,
            )
        finally:
            await client.aclose()

    done = asyncio.run(step())
    assert (done.more, done.checked, done.not_on_whatsapp) == (False, 3, 1)
    rows = {r["phone_e164"]: r for r in contact_rows(engine, campaign_id)}
    assert (rows[phone(1)]["state"], rows[phone(1)]["reason_code"]) == (
        "sending_failed",
        "not_on_whatsapp",
    )
    assert rows[phone(0)]["wa_id"] == phone(0)[1:]
    chain(engine, campaign_id, ports, max_s=0)
    assert states(engine, campaign_id)[phone(0)] == "sent"
    assert checking.stats()["requests_total"] == 2  # the invalid one was never sent
