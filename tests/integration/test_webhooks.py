"""Delivery webhooks on the real (embedded) Postgres and Redis: receiver, applier, worker.

Most tests call the services (receive, then drain) so that what they check is deterministic;
the receiver's HTTP behaviour is tested through the FastAPI app, and two tests run the whole
path: HTTP POST -> inbox -> debounced kick -> a real Celery worker on the ``webhooks`` queue.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from campaigns.api import webhooks as webhooks_api
from campaigns.clients import redis_keys
from campaigns.clients.telemetry import read_snapshot
from campaigns.clients.whatsapp import WhatsAppClient, WhatsAppEndpoint
from campaigns.dev.simulator import OutcomeRules, RunningSimulator, SimulatorConfig
from campaigns.dev.simulator.outcomes import reads
from campaigns.domain.webhooks import opt_out_words
from campaigns.runtime import embedded
from campaigns.runtime import stores as runtime
from campaigns.services import campaigns as campaign_service
from campaigns.services.webhooks import apply as webhooks_apply
from campaigns.services.webhooks import receive as webhooks_in
from campaigns.services.webhooks import report as webhooks_report
from campaigns.services.webhooks import retention as webhook_retention
from campaigns.storage import uploads as uploads_db
from schemas.api import CampaignCreate
from schemas.whatsapp import SIGNATURE_HEADER, sign_payload
from tests.conftest import API_TOKEN
from tests.integration.registry_support import OPT_OUTS
from tests.integration.test_uploads import contacts as upload_contacts
from tests.integration.test_uploads import upload_bytes

SECRET = "whatsapp-app-secret-for-tests"
VERIFY = "verify-token-for-tests"
PATH = "/webhooks/whatsapp"
TS = 1_732_700_000  # a status timestamp (Unix seconds)
FAST = webhooks_apply.ApplyPolicy(retry_base_s=0.0)  # parked statuses are due again at once


@pytest.fixture(autouse=True)
def webhook_settings(stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WHATSAPP_APP_SECRET", SECRET)
    monkeypatch.setenv("WHATSAPP_VERIFY_TOKEN", VERIFY)
    runtime.reset()
    yield
    monkeypatch.undo()
    runtime.reset()


@pytest.fixture(autouse=True)
def quiet_kicks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only tests with the real worker queue the applier: a kick left over from another
    test would otherwise let the session's worker apply rows under a later test's feet."""
    if not {"webhooks_worker", "real_kicks"} & set(request.fixturenames):
        monkeypatch.setattr(webhooks_api._Kicker, "kick", lambda self, debounce_ms: None)


@pytest.fixture
def real_kicks() -> None:
    """Requested by a test that checks the kick itself (see quiet_kicks)."""


@pytest.fixture
def client(db: Engine) -> Iterator[TestClient]:
    from campaigns.api.app import create_app

    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def webhooks_worker(stack: dict[str, str]) -> Iterator[Any]:
    """A real Celery worker (in a thread) consuming the webhooks queue of the real broker.

    Session-scoped like ``ingest_worker``: stopping a test worker stops every test worker of
    the process (Celery's global ``should_terminate``), so it lives as long as the session.
    """
    from celery.contrib.testing.worker import start_worker
    from kombu.asynchronous import set_event_loop

    from workers.app import app

    # Its own kombu event loop (the loop is process-global): on the ingest worker's loop it
    # would never run the receiver's countdown-queued apply_inbox, when both share a process.
    set_event_loop(None)
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        queues=["webhooks"],
        loglevel="WARNING",
        shutdown_timeout=30,
        hostname="webhooks-test@localhost",
    ) as worker:
        yield worker


# --------------------------------------------------------------------------- helpers


def envelope(
    statuses: list[dict[str, Any]] | None = None,
    messages: list[dict[str, Any]] | None = None,
    field: str = "messages",
) -> bytes:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1234"},
    }
    if statuses:
        value["statuses"] = list(statuses)
    if messages:
        value["messages"] = list(messages)
        value["contacts"] = [{"profile": {"name": "Anna"}, "wa_id": m["from"]} for m in messages]
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000001", "changes": [{"field": field, "value": value}]}],
    }
    return json.dumps(body).encode()


def status(
    wamid: str,
    kind: str,
    *,
    ts: int = TS,
    attempt: uuid.UUID | str | None = None,
    code: int | None = None,
    recipient: str = "4915123456701",
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": wamid,
        "status": kind,
        "timestamp": str(ts),
        "recipient_id": recipient,
    }
    if attempt is not None:
        out["biz_opaque_callback_data"] = str(attempt)
    if code is not None:
        out["errors"] = [
            {
                "code": code,
                "title": "Message undeliverable",
                "message": "Message undeliverable",
                "error_data": {"details": "Recipient is not on WhatsApp."},
            }
        ]
    return out


def text_message(sender: str, body: str, wamid: str | None = None) -> dict[str, Any]:
    return {
        "from": sender,
        "id": wamid or f"wamid.in.{uuid.uuid4().hex}",
        "timestamp": str(TS),
        "type": "text",
        "text": {"body": body},
    }


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def receive(engine: Engine, body: bytes) -> None:
    """What the receiver does with a POST: verify the signature, then store the raw body."""
    webhooks_in.verify_webhook(body, sign_payload(body, SECRET), SECRET)
    webhooks_in.store_webhooks(engine, [body])


def deliver(
    engine: Engine, body: bytes, policy: webhooks_apply.ApplyPolicy = FAST
) -> webhooks_apply.ApplyStats:
    """What the receiver and the applier do, without HTTP and Celery in between."""
    receive(engine, body)
    return webhooks_apply.drain(engine, policy=policy, retries=True)


def post(client: TestClient, body: bytes, *, signature: str | None = "sign") -> Any:
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        headers[SIGNATURE_HEADER] = sign_payload(body, SECRET)
    elif signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return client.post(PATH, content=body, headers=headers)


class Seed:
    """A campaign with an upload row, to hang contacts in any state on."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.campaign_id = campaign_service.create_campaign(
            engine, CampaignCreate(name="webhooks", template="bf_offer", region="DE")
        ).id
        with engine.begin() as conn:
            self.upload_id = uploads_db.insert_upload(
                conn,
                {
                    "campaign_id": self.campaign_id,
                    "filename": "seed.csv",
                    "spool_path": "/nonexistent",
                    "size_bytes": 0,
                    "status": "completed",
                },
            )
        self.line = 0

    def contact(
        self,
        state: str,
        *,
        wamid: str | None = None,
        attempt_id: uuid.UUID | None = None,
        phone: str | None = None,
        lease_s: float | None = None,
        **stamps: datetime,
    ) -> int:
        self.line += 1
        phone = phone or f"+49151234{self.line:05d}"
        values = {
            "campaign_id": self.campaign_id,
            "upload_id": self.upload_id,
            "line_no": self.line,
            "phone_raw": phone,
            "phone_e164": phone,
            "state": state,
            "wamid": wamid,
            "attempt_id": attempt_id,
            "lease": lease_s,
            "sent_at": stamps.get("sent_at"),
            "delivered_at": stamps.get("delivered_at"),
            "read_at": stamps.get("read_at"),
        }
        with self.engine.begin() as conn:
            contact_id = conn.execute(
                text(
                    """
                    INSERT INTO contacts (campaign_id, upload_id, line_no, phone_raw, phone_e164,
                        state, wamid, attempt_id, lease_expires_at, sent_at, delivered_at, read_at)
                    VALUES (:campaign_id, :upload_id, :line_no, :phone_raw, :phone_e164, :state,
                        :wamid, :attempt_id,
                        CASE WHEN CAST(:lease AS float8) IS NULL THEN NULL
                             ELSE now() + make_interval(secs => :lease) END,
                        :sent_at, :delivered_at, :read_at)
                    RETURNING id
                    """
                ),
                values,
            ).scalar_one()
        return int(contact_id)


def contact(engine: Engine, contact_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM contacts WHERE id = :id"), {"id": contact_id})
        return dict(row.mappings().one())


def events(engine: Engine, contact_id: int) -> list[tuple[str | None, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT from_state, to_state, source FROM contact_events "
                "WHERE contact_id = :id ORDER BY id"
            ),
            {"id": contact_id},
        )
        return [(r.from_state, r.to_state, r.source) for r in rows]


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    describe: Callable[[], object] = lambda: None,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {describe()}")
        time.sleep(0.1)  # a test waiting on worker threads, not production code


# --------------------------------------------------------------------------- receiver


def test_signed_post_is_stored_raw_and_answered_200(client: TestClient, db: Engine) -> None:
    body = envelope([status("wamid.A", "delivered")])
    response = post(client, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "pending"}
    with db.connect() as conn:
        stored = conn.execute(text("SELECT body FROM webhook_inbox")).scalars().all()
    assert [bytes(b) for b in stored] == [body]


@pytest.mark.parametrize(
    ("case", "expected"),
    [("wrong secret", 403), ("tampered body", 403), ("missing header", 401), ("not sha256", 403)],
)
def test_refused_signatures_store_nothing(
    client: TestClient, db: Engine, case: str, expected: int
) -> None:
    body = envelope([status("wamid.A", "delivered")])
    signature: str | None = {
        "wrong secret": sign_payload(body, "another-secret"),
        "tampered body": sign_payload(body, SECRET),
        "missing header": None,
        "not sha256": "sha1=" + sign_payload(body, SECRET).removeprefix("sha256="),
    }[case]
    sent = body.replace(b"delivered", b"read") if case == "tampered body" else body
    response = post(client, sent, signature=signature)
    assert response.status_code == expected, response.text
    assert response.json()["code"] in {"signature_missing", "signature_invalid"}
    assert scalar(db, "SELECT count(*) FROM webhook_inbox") == 0


def test_without_an_app_secret_every_post_is_refused(
    client: TestClient, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHATSAPP_APP_SECRET", "")
    runtime.reset()
    body = envelope([status("wamid.A", "delivered")])
    for signature in (sign_payload(body, ""), sign_payload(body, SECRET), None):
        response = post(client, body, signature=signature)
        assert response.status_code == 503
        assert "WHATSAPP_APP_SECRET" in response.json()["message"]
    assert scalar(db, "SELECT count(*) FROM webhook_inbox") == 0


def test_verification_refuses_before_anything_is_stored(db: Engine) -> None:
    body = envelope([status("wamid.A", "delivered")])
    with pytest.raises(webhooks_in.SignatureInvalid):
        webhooks_in.verify_webhook(body, sign_payload(body + b" ", SECRET), SECRET)
    with pytest.raises(webhooks_in.SignatureMissing):
        webhooks_in.verify_webhook(body, None, SECRET)
    with pytest.raises(webhooks_in.WebhookSecretMissing):
        webhooks_in.verify_webhook(body, sign_payload(body, ""), "")
    assert scalar(db, "SELECT count(*) FROM webhook_inbox") == 0


def test_handshake(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = client.get(
        PATH,
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"},
    )
    assert ok.status_code == 200
    assert ok.text == "1158201444"
    assert ok.headers["content-type"].startswith("text/plain")
    for params in (
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"},
        {"hub.verify_token": VERIFY, "hub.challenge": "1"},
    ):
        assert client.get(PATH, params=params).status_code == 403
    monkeypatch.setenv("WHATSAPP_VERIFY_TOKEN", "")
    runtime.reset()
    empty = {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}
    assert client.get(PATH, params=empty).status_code == 403


def test_malformed_json_with_a_valid_signature_is_kept_as_rejected(
    client: TestClient, db: Engine
) -> None:
    body = b'{"object": "whatsapp_business_account", "entry": [ oops'
    response = post(client, body)
    assert response.status_code == 200
    assert response.json() == {"status": "rejected"}
    with db.connect() as conn:
        row = conn.execute(text("SELECT status, reason, body FROM webhook_inbox")).one()
    assert row.status == "rejected" and bytes(row.body) == body
    assert row.reason.startswith("malformed JSON")


def test_json_that_is_no_envelope_is_rejected_by_the_applier(db: Engine) -> None:
    stats = deliver(db, b'{"object": "whatsapp_business_account", "entry": [{"changes": 3}]}')
    assert stats.rejected == 1
    report = webhooks_report.webhook_report(db)
    assert report.inbox["rejected"] == 1
    assert report.rejected[0].reason is not None
    assert "not a webhook envelope" in report.rejected[0].reason


def test_other_fields_and_unknown_statuses_are_stored_and_ignored(db: Engine) -> None:
    seed = Seed(db)
    cid = seed.contact("sent", wamid="wamid.A", sent_at=at(TS))
    deliver(db, envelope([status("wamid.A", "delivered")], field="message_template_status_update"))
    stats = deliver(db, envelope([status("wamid.A", "deleted")]))
    assert stats.ignored == 1
    assert contact(db, cid)["state"] == "sent"
    assert webhooks_report.webhook_report(db).inbox["applied"] == 2


# --------------------------------------------------------------------------- status paths

T1, T2, T3 = TS + 1, TS + 2, TS + 3


@pytest.mark.parametrize(
    ("start", "stamps", "statuses", "expected", "filled"),
    [
        ("sent", {"sent_at": T1}, [("delivered", T2)], "delivered", {"delivered_at": T2}),
        ("sent", {"sent_at": T1}, [("read", T3)], "read", {"read_at": T3}),
        ("delivered", {"delivered_at": T2}, [("read", T3)], "read", {"read_at": T3}),
        ("sent", {}, [("sent", T1)], "sent", {"sent_at": T1}),  # only fills sent_at
        ("sent", {"sent_at": T1}, [("failed", T2)], "delivery_failed", {"failed_at": T2}),
        # failed after delivered: ignored
        ("delivered", {"delivered_at": T2}, [("failed", T3)], "delivered", {"failed_at": None}),
        # late delivered after read: fills delivered_at and nothing else
        ("read", {"read_at": T3}, [("delivered", T2)], "read", {"delivered_at": T2}),
        # a duplicate changes nothing
        ("delivered", {"delivered_at": T2}, [("delivered", T3)], "delivered", {}),
        ("read", {"read_at": T3}, [("read", T3), ("sent", T1)], "read", {"sent_at": T1}),
        # a state no webhook settles
        ("error", {}, [("delivered", T2), ("read", T3)], "error", {"delivered_at": None}),
        ("removed", {}, [("sent", T1)], "removed", {"sent_at": None}),
    ],
)
def test_status_paths(
    db: Engine,
    start: str,
    stamps: dict[str, int],
    statuses: list[tuple[str, int]],
    expected: str,
    filled: dict[str, int | None],
) -> None:
    seed = Seed(db)
    timestamps: dict[str, Any] = {k: at(v) for k, v in stamps.items()}
    cid = seed.contact(start, wamid="wamid.P", **timestamps)
    before = contact(db, cid)
    code = 131026
    for kind, ts in statuses:
        deliver(
            db, envelope([status("wamid.P", kind, ts=ts, code=code if kind == "failed" else None)])
        )
    after = contact(db, cid)
    assert after["state"] == expected
    for column in ("sent_at", "delivered_at", "read_at", "failed_at"):
        if column in filled:
            want = filled[column]
            assert after[column] == (None if want is None else at(want)), column
        else:
            assert after[column] == before[column], column
    moved = [(e[0], e[1]) for e in events(db, cid)]
    assert moved == ([(start, expected)] if expected != start else [])
    assert all(e[2] == "webhook" for e in events(db, cid))
    if expected == "delivery_failed":
        assert after["error_code"] == code
        assert after["error_detail"] == "Message undeliverable: Recipient is not on WhatsApp."
        assert after["finished_at"] is not None
    else:
        assert after["error_code"] is None


def test_delivery_failures_are_counted_per_campaign_and_code(db: Engine) -> None:
    seed = Seed(db)
    codes = [131026, 131026, 131049]
    body = []
    for i, code in enumerate(codes):
        seed.contact("sent", wamid=f"wamid.F{i}")
        body.append(status(f"wamid.F{i}", "failed", code=code))
    seed.contact("sent", wamid="wamid.OK")
    body.append(status("wamid.OK", "delivered"))
    deliver(db, envelope(body))
    failures = webhooks_report.webhook_report(db, campaign_id=seed.campaign_id).delivery_failures
    assert [(f.error_code, f.contacts) for f in failures] == [(131026, 2), (131049, 1)]
    assert failures[0].example_detail == "Message undeliverable: Recipient is not on WhatsApp."
    assert (
        webhooks_report.webhook_report(db, campaign_id=seed.campaign_id + 1).delivery_failures == []
    )


def test_one_batch_of_shuffled_duplicated_statuses_for_many_contacts(db: Engine) -> None:
    seed = Seed(db)
    rng = random.Random(5)
    paths: dict[int, list[str]] = {}
    statuses: list[dict[str, Any]] = []
    for i in range(60):
        wamid = f"wamid.M{i}"
        cid = seed.contact("sent", wamid=wamid)
        life = [["sent", "delivered", "read"], ["sent", "delivered"], ["sent", "failed"]][i % 3]
        paths[cid] = ["sent"] + [{"failed": "delivery_failed"}.get(k, k) for k in life[1:]]
        for step, kind in enumerate(life):
            item = status(wamid, kind, ts=TS + step, code=131049 if kind == "failed" else None)
            statuses += [item] * rng.choice([1, 1, 2, 3])
    rng.shuffle(statuses)
    # Two POSTs, applied together in one batch: duplicates across and within bodies.
    for half in (statuses[: len(statuses) // 2], statuses[len(statuses) // 2 :]):
        receive(db, envelope(half))
    stats = webhooks_apply.apply_inbox(db, policy=FAST)
    assert stats.inbox_rows == 2 and stats.statuses == len(statuses)
    assert stats.moved == sum(len(p) - 1 for p in paths.values()) and stats.parked == 0
    assert stats.applied == len(statuses)
    for cid, path in paths.items():
        row = contact(db, cid)
        assert row["state"] == path[-1]
        assert row["sent_at"] == at(TS)
        # One event per step, in the logical order, whatever the arrival order was.
        assert events(db, cid) == [(a, b, "webhook") for a, b in itertools.pairwise(path)]


# --------------------------------------------------------------------------- matching


def dispatch_record(engine: Engine, contact_id: int, attempt_id: uuid.UUID, wamid: str) -> int:
    """What the dispatch worker writes when the platform accepted the send: Sent only from
    In progress of this attempt; otherwise (a webhook was first) fill wamid/wa_id if empty."""
    with engine.begin() as conn:
        moved = conn.execute(
            text(
                """
                UPDATE contacts SET state = 'sent', wamid = :wamid, wa_id = :wa_id,
                    sent_at = now(), lease_expires_at = NULL, updated_at = now()
                WHERE id = :id AND state = 'in_progress' AND attempt_id = :attempt
                """
            ),
            {"id": contact_id, "attempt": attempt_id, "wamid": wamid, "wa_id": "4915123456701"},
        ).rowcount
        if not moved:
            conn.execute(
                text(
                    """
                    UPDATE contacts SET wamid = COALESCE(wamid, :wamid),
                        wa_id = COALESCE(wa_id, :wa_id)
                    WHERE id = :id AND attempt_id = :attempt
                    """
                ),
                {"id": contact_id, "attempt": attempt_id, "wamid": wamid, "wa_id": "4915123456701"},
            )
    return int(moved)


@pytest.mark.parametrize("lease_s", [60.0, -60.0], ids=["worker-not-committed", "lease-expired"])
def test_webhook_before_the_workers_commit_is_matched_by_attempt_id(
    db: Engine, lease_s: float
) -> None:
    seed = Seed(db)
    attempt = uuid.uuid4()
    cid = seed.contact("in_progress", attempt_id=attempt, lease_s=lease_s)
    stats = deliver(db, envelope([status("wamid.RACE", "delivered", ts=T2, attempt=attempt)]))
    assert (stats.moved, stats.parked) == (1, 0)
    row = contact(db, cid)
    assert row["state"] == "delivered"
    assert row["wamid"] == "wamid.RACE"  # stored from the status: later ones match by wamid
    assert row["wa_id"] == "4915123456701"
    assert row["lease_expires_at"] is None
    assert row["delivered_at"] == at(T2)
    # The worker's own record comes after: it must not pull the contact back to Sent.
    assert dispatch_record(db, cid, attempt, "wamid.RACE") == 0
    row = contact(db, cid)
    assert (row["state"], row["wamid"]) == ("delivered", "wamid.RACE")
    # The late sent status (no callback data this time) matches by the wamid now.
    deliver(db, envelope([status("wamid.RACE", "sent", ts=T1)]))
    row = contact(db, cid)
    assert (row["state"], row["sent_at"], row["delivered_at"]) == ("delivered", at(T1), at(T2))
    assert [(e[0], e[1]) for e in events(db, cid)] == [("in_progress", "delivered")]


def test_a_retry_whose_send_the_platform_took_is_settled_not_sent_again(db: Engine) -> None:
    """A 5xx answered a send the platform had accepted: its webhook names the current
    attempt, so the contact leaves Retry scheduled for good instead of being messaged twice."""
    seed = Seed(db)
    attempt = uuid.uuid4()
    cid = seed.contact("retry_scheduled", attempt_id=attempt)
    other = seed.contact("retry_scheduled", attempt_id=uuid.uuid4())
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE contacts SET next_attempt_at = now() + interval '1 minute', "
                "error_code = 131000, error_detail = 'server error' WHERE id IN (:a, :b)"
            ),
            {"a": cid, "b": other},
        )
    stale = uuid.uuid4()  # an attempt that is not the contact's current one matches nothing
    stats = deliver(
        db,
        envelope(
            [
                status("wamid.LATE", "delivered", ts=T2, attempt=attempt),
                status("wamid.STALE", "sent", ts=T1, attempt=stale),
            ]
        ),
        policy=webhooks_apply.ApplyPolicy(retry_base_s=3600.0),
    )
    assert (stats.moved, stats.parked) == (1, 1)
    assert stats.by_status == {"delivered": 1}  # metrics count matched statuses only
    row = contact(db, cid)
    assert (row["state"], row["wamid"], row["delivered_at"]) == (
        "delivered",
        "wamid.LATE",
        at(T2),
    )
    assert (row["error_code"], row["error_detail"]) == (None, None)
    assert [(e[0], e[1]) for e in events(db, cid)] == [("retry_scheduled", "delivered")]
    # Not due any more: the claim of due contacts does not see it.
    assert scalar(db, "SELECT state FROM contacts WHERE id = :id", id=other) == "retry_scheduled"


def test_attempt_id_of_the_callback_data_must_be_a_uuid_of_ours(db: Engine) -> None:
    seed = Seed(db)
    attempt = uuid.uuid4()
    cid = seed.contact("in_progress", attempt_id=attempt, lease_s=60)
    stats = deliver(
        db,
        envelope(
            [
                status("wamid.X1", "delivered", attempt="not-a-uuid"),
                status("wamid.X2", "delivered", attempt=uuid.uuid4()),
            ]
        ),
    )
    assert stats.parked == 2 and stats.moved == 0
    assert contact(db, cid)["state"] == "in_progress"


def test_unknown_wamid_waits_and_is_applied_once_the_contact_is_known(db: Engine) -> None:
    seed = Seed(db)
    slow = webhooks_apply.ApplyPolicy(retry_base_s=60.0)
    stats = deliver(db, envelope([status("wamid.LATER", "read", ts=T3)]), policy=slow)
    assert stats.parked == 1
    report = webhooks_report.webhook_report(db)
    assert report.status_retries["waiting"] == 1 and report.inbox["applied"] == 1
    # Not due yet: a sweep leaves it waiting.
    assert webhooks_apply.drain(db, policy=slow, retries=True).retried == 0
    # The worker's commit of the wamid lands; the retry is due (its backoff is over).
    cid = seed.contact("sent", wamid="wamid.LATER", sent_at=at(T1))
    with db.begin() as conn:
        conn.execute(text("UPDATE webhook_status_retries SET next_try_at = now()"))
    stats = webhooks_apply.drain(db, policy=slow, retries=True)
    assert (stats.retried, stats.moved, stats.unmatched) == (1, 1, 0)
    row = contact(db, cid)
    assert (row["state"], row["read_at"]) == ("read", at(T3))
    report = webhooks_report.webhook_report(db)
    assert report.status_retries == {"waiting": 0, "applied": 1, "unmatched": 0}


def test_a_status_unknown_for_good_is_reported_not_dropped(client: TestClient, db: Engine) -> None:
    policy = webhooks_apply.ApplyPolicy(retry_base_s=0.0, max_tries=3)
    body = envelope([status("wamid.NOBODY", "delivered", attempt=uuid.uuid4())])
    first = deliver(db, body, policy=policy)  # tried, parked, and tried again by the sweep
    assert (first.parked, first.retried, first.unmatched) == (1, 1, 0)
    assert webhooks_report.webhook_report(db).status_retries["waiting"] == 1
    second = webhooks_apply.drain(db, policy=policy, retries=True)  # the next sweep: third try
    assert (second.retried, second.unmatched) == (1, 1)
    report = webhooks_report.webhook_report(db)
    assert report.inbox["unmatched"] == 1
    assert report.status_retries["unmatched"] == 1
    assert [(u.wamid, u.status, u.tries) for u in report.unmatched] == [
        ("wamid.NOBODY", "delivered", 3)
    ]
    with db.connect() as conn:
        reason = conn.execute(text("SELECT reason FROM webhook_inbox")).scalar_one()
    assert reason == "1 status(es) matched no contact"
    # Operators see it over HTTP too (bearer token required there).
    assert client.get("/webhooks/report").status_code == 401
    seen = client.get("/webhooks/report", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert seen.status_code == 200
    assert seen.json()["unmatched"][0]["wamid"] == "wamid.NOBODY"


def test_max_age_bounds_the_retries_too(db: Engine) -> None:
    policy = webhooks_apply.ApplyPolicy(retry_base_s=3600.0, max_tries=100, max_age_s=30)
    deliver(db, envelope([status("wamid.OLD", "sent")]), policy=policy)
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE webhook_status_retries SET created_at = now() - interval '1 minute', "
                "next_try_at = now()"
            )
        )
    stats = webhooks_apply.retry_statuses(db, policy=policy)
    assert stats.unmatched == 1
    assert webhooks_report.webhook_report(db).status_retries["unmatched"] == 1


def test_applied_bodies_past_retention_are_pruned_the_rest_kept(db: Engine) -> None:
    seed = Seed(db)
    seed.contact("sent", wamid="wamid.P1", sent_at=at(T1))
    slow = webhooks_apply.ApplyPolicy(retry_base_s=3600.0)
    deliver(db, envelope([status("wamid.P1", "delivered")]), slow)  # applied
    deliver(db, envelope([status("wamid.NOBODY", "delivered")]), slow)  # a status waits
    receive(db, b"not json")
    webhooks_apply.drain(db, policy=slow)  # rejected
    deliver(db, envelope([status("wamid.P1", "read")]), slow)  # applied, but recent
    with db.begin() as conn:
        ids = conn.execute(text("SELECT id, status FROM webhook_inbox ORDER BY id")).all()
        assert [r.status for r in ids] == ["applied", "applied", "rejected", "applied"]
        old = [r.id for r in ids[:3]]
        conn.execute(
            text(
                "UPDATE webhook_inbox SET received_at = now() - interval '2 days' "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": old},
        )

    assert webhook_retention.prune_inbox(db, retention_s=86400, batch=1) == 1
    with db.connect() as conn:
        left = conn.execute(text("SELECT id FROM webhook_inbox ORDER BY id")).scalars().all()
        waiting = conn.execute(
            text("SELECT count(*) FROM webhook_status_retries WHERE state = 'waiting'")
        ).scalar_one()
    # Gone: the old applied body. Kept: the one whose status still waits for its contact,
    # the rejected one (operators read it), and the recent one.
    assert left == [r.id for r in ids[1:]]
    assert waiting == 1
    assert webhook_retention.prune_inbox(db, retention_s=86400) == 0


def test_a_body_that_fails_to_apply_does_not_block_the_others(db: Engine) -> None:
    seed = Seed(db)
    cid = seed.contact("sent", wamid="wamid.GOOD")
    policy = webhooks_apply.ApplyPolicy(retry_base_s=0.0, max_tries=2)
    poison = envelope([status("wamid.\u0000", "delivered")])  # Postgres text takes no NUL
    good = envelope([status("wamid.GOOD", "delivered")])
    for body in (poison, good):
        receive(db, body)
    stats = webhooks_apply.apply_inbox(db, policy=policy)
    assert (stats.failed_rows, stats.moved) == (1, 1)
    assert contact(db, cid)["state"] == "delivered"
    with db.connect() as conn:
        row = conn.execute(
            text("SELECT status, tries, reason FROM webhook_inbox ORDER BY id")
        ).first()
    assert row is not None and (row.status, row.tries) == ("pending", 1)
    assert "apply failed (try 1)" in row.reason
    webhooks_apply.apply_inbox(db, policy=policy)  # second and last try
    assert webhooks_report.webhook_report(db).inbox == {
        "pending": 0,
        "applied": 1,
        "rejected": 1,
        "unmatched": 0,
    }


def test_a_deadlocked_batch_runs_again(db: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """Another transaction locks the same contacts in the opposite order: Postgres aborts
    the applier's batch (40P01), which rolls back whole and runs again."""
    seed = Seed(db)
    low = seed.contact("sent", wamid="wamid.LOW")
    high = seed.contact("sent", wamid="wamid.HIGH")
    body = envelope([status("wamid.LOW", "delivered"), status("wamid.HIGH", "read")])
    receive(db, body)
    result: dict[str, Any] = {}
    other = db.connect()
    try:
        other.exec_driver_sql("SET deadlock_timeout = '20s'")  # the applier detects it first
        other.execute(text("SELECT 1 FROM contacts WHERE id = :id FOR UPDATE"), {"id": high})
        applier = threading.Thread(target=lambda: result.update(stats=webhooks_apply.drain(db)))
        applier.start()

        def applier_waits() -> bool:
            waiting = scalar(
                db,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            return bool(waiting)

        wait_for(applier_waits, 10, "the applier to wait for the lock")
        other.execute(text("SELECT 1 FROM contacts WHERE id = :id FOR UPDATE"), {"id": low})
        other.commit()  # only after the applier was chosen as the deadlock victim
    finally:
        other.close()
    applier.join(30)
    stats = result["stats"]
    assert (stats.moved, stats.statuses) == (2, 2)
    assert (contact(db, low)["state"], contact(db, high)["state"]) == ("delivered", "read")
    assert any("running it again" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- opt-out


def test_stop_reply_opts_the_phone_out_of_later_uploads(db: Engine) -> None:
    stop = text_message("4915123456701", "  Stop ", wamid="wamid.in.1")
    chat = text_message("4915123456702", "stop sending me the old offer", wamid="wamid.in.2")
    stats = deliver(db, envelope(messages=[stop, chat]))
    assert (stats.inbound, stats.opt_outs) == (2, 1)
    again = deliver(db, envelope(messages=[stop]))  # the platform delivers it again
    assert (again.inbound, again.opt_outs) == (0, 0)
    with db.connect() as conn:
        opted = conn.execute(text(OPT_OUTS)).all()
        stored = conn.execute(
            text("SELECT wamid, from_wa_id, text, raw FROM inbound_messages ORDER BY wamid")
        ).all()
    assert [tuple(r) for r in opted] == [("+4915123456701", "whatsapp reply")]
    assert [(r.wamid, r.from_wa_id, r.text) for r in stored] == [
        ("wamid.in.1", "4915123456701", "  Stop "),
        ("wamid.in.2", "4915123456702", "stop sending me the old offer"),
    ]
    assert stored[0].raw["from"] == "4915123456701"

    campaign_id = campaign_service.create_campaign(
        db, CampaignCreate(name="after", template="bf_offer", region="DE")
    ).id
    upload = upload_bytes(db, campaign_id, b"phone,name\n+4915123456701,A\n+4915123456702,B\n")
    assert (upload.valid, upload.invalid, upload.reasons) == (1, 1, {"opted_out": 1})
    rows = upload_contacts(db, campaign_id)
    assert [(r["phone_e164"], r["state"], r["reason"]) for r in rows] == [
        ("+4915123456701", "invalid_record", "opted out"),
        ("+4915123456702", "initial", None),
    ]


def test_opt_out_covers_the_number_sent_to_when_the_wa_id_differs(db: Engine) -> None:
    # Mexico: sent to +52 55..., the platform's wa_id (and so the reply's "from") is 521 55...
    policy = webhooks_apply.ApplyPolicy(retry_base_s=0.0, opt_out_words=opt_out_words("BAJA, stop"))
    stats = deliver(db, envelope(messages=[text_message("5215512345678", "Baja")]), policy=policy)
    assert stats.opt_outs == 2
    with db.connect() as conn:
        opted = conn.execute(text(OPT_OUTS + " ORDER BY 1")).scalars().all()
    assert opted == ["+5215512345678", "+525512345678"]
    campaign_id = campaign_service.create_campaign(
        db, CampaignCreate(name="mx", template="bf_offer", region="MX")
    ).id
    upload = upload_bytes(db, campaign_id, b"phone,name\n+52 55 1234 5678,A\n")
    assert upload.reasons == {"opted_out": 1}


# --------------------------------------------------------------------------- kick


def test_the_applier_is_queued_once_per_window_across_processes(
    stack: dict[str, str], db: Engine, monkeypatch: pytest.MonkeyPatch, real_kicks: None
) -> None:
    from workers.app import app

    sent: list[tuple[str, float]] = []
    monkeypatch.setattr(app, "send_task", lambda name, countdown: sent.append((name, countdown)))
    first, second = (webhooks_api._Kicker(stack["REDIS_URL"]) for _ in range(2))
    for _ in range(50):  # two API processes, many POSTs inside one window
        first.kick(500)
        second.kick(500)
    assert sent == [("workers.webhooks.apply_inbox", 0.5 + webhooks_api.KICK_MARGIN_S)]
    redis_client = first._redis
    assert 0 < redis_client.pttl(redis_keys.WEBHOOK_KICK) <= 500
    redis_client.delete(redis_keys.WEBHOOK_KICK)  # the window closed
    second._covered_until = 0.0  # (and this process's own memory of it)
    second.kick(500)
    assert len(sent) == 2


# --------------------------------------------------------------------------- end to end


def test_posts_are_applied_by_a_real_worker(
    client: TestClient, db: Engine, webhooks_worker: Any
) -> None:
    seed = Seed(db)
    ids = [seed.contact("sent", wamid=f"wamid.W{i}", sent_at=at(T1)) for i in range(30)]
    metrics_redis = redis.Redis.from_url(runtime.resolve().redis_url)
    before = read_snapshot(metrics_redis)
    for i in range(30):  # one POST per status, as fast as the client goes
        kind = ("delivered", "read", "failed")[i % 3]
        body = envelope([status(f"wamid.W{i}", kind, code=131049 if kind == "failed" else None)])
        assert post(client, body).status_code == 200

    def settled() -> bool:
        states = scalar(
            db,
            "SELECT count(*) FROM contacts WHERE state IN ('delivered', 'read', 'delivery_failed')",
        )
        return bool(states == 30)

    wait_for(settled, 20, "the worker to apply 30 statuses")
    assert [contact(db, cid)["state"] for cid in ids[:3]] == [
        "delivered",
        "read",
        "delivery_failed",
    ]
    assert webhooks_report.webhook_report(db).inbox["pending"] == 0

    def counted() -> dict[str, int]:
        now = read_snapshot(metrics_redis)
        return {k: now.webhooks.get(k, 0) - before.webhooks.get(k, 0) for k in now.webhooks}

    # The applier records its statuses and their lag (from the status timestamp) for /metrics.
    wait_for(
        lambda: counted() == {"delivered": 10, "read": 10, "failed": 10}, 10, "metrics", counted
    )
    lag = read_snapshot(metrics_redis).webhook_lag
    assert lag.count - before.webhook_lag.count == 30


class ServerThread:
    """The real HTTP service (uvicorn) on a free port in a thread, for the simulator to call."""

    def __init__(self) -> None:
        from campaigns.api.app import create_app

        self.port = embedded.free_port()
        config = uvicorn.Config(
            create_app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        embedded.wait_until(lambda: self.server.started, timeout_s=10, what="uvicorn")
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_concurrent_posts_share_commits_and_each_gets_its_own_answer(db: Engine) -> None:
    """The receiver stores concurrent POSTs together (group commit); every POST still gets
    the answer for its own body: stored, stored as rejected, or refused and not stored."""
    good = [envelope([status(f"wamid.C{i}", "delivered")]) for i in range(40)]
    malformed = [
        b'{"object": "whatsapp_business_account", "entry": [' + bytes([65 + i]) for i in range(5)
    ]
    forged = [envelope([status(f"wamid.F{i}", "read")]) for i in range(5)]
    posts = [(b, sign_payload(b, SECRET)) for b in good + malformed]
    posts += [(b, sign_payload(b, "not-the-secret")) for b in forged]
    random.Random(4).shuffle(posts)

    async def post_all(url: str) -> list[tuple[bytes, int, dict[str, Any]]]:
        async with httpx.AsyncClient(timeout=30) as http:

            async def one(body: bytes, signature: str) -> tuple[bytes, int, dict[str, Any]]:
                answer = await http.post(url, content=body, headers={SIGNATURE_HEADER: signature})
                return body, answer.status_code, answer.json()

            return await asyncio.gather(*(one(b, s) for b, s in posts))

    with ServerThread() as server:
        answers = asyncio.run(post_all(server.webhook_url))
    for body, code, answer in answers:
        if body in forged:
            assert (code, answer["code"]) == (403, "signature_invalid")
        else:
            assert code == 200
            assert answer == {"status": "rejected" if body in malformed else "pending"}
    with db.connect() as conn:
        rows = conn.execute(text("SELECT body, status FROM webhook_inbox")).all()
    # (The session's webhooks worker may have applied the good ones meanwhile.)
    assert sorted(bytes(r.body) for r in rows) == sorted(good + malformed)
    assert {bytes(r.body) for r in rows if r.status == "rejected"} == set(malformed)


def test_simulator_webhooks_reordered_and_duplicated_end_in_the_right_states(
    db: Engine, webhooks_worker: Any
) -> None:
    """Sends through the real client to the simulator, which posts its signed, delayed,
    duplicated and reordered status webhooks to the real HTTP service; the dispatch-style
    record of each send lands only after webhooks have started to arrive (the race)."""
    seed = Seed(db)
    rules = OutcomeRules(delivery_fail_share=0.1, read_share=0.5)
    digits = [f"491512345{(i * 13) % 100:02d}{(i * 7) % 100:02d}" for i in range(40)]
    ids = [seed.contact("initial", phone="+" + d) for d in digits]
    with (
        ServerThread() as server,
        RunningSimulator(
            SimulatorConfig(
                port=0,
                webhook_url=server.webhook_url,
                app_secret=SECRET,
                pair_interval_s=0,
                duplicate_share=0.5,
                reorder=True,
                webhook_delay_min_s=0.0,
                webhook_delay_max_s=0.4,
                webhook_tick_s=0.01,
                outcomes=rules,
                seed=3,
            )
        ) as sim,
    ):
        with db.begin() as conn:  # the dispatch claim: In progress with a fresh attempt id
            claimed = conn.execute(
                text(
                    """
                    UPDATE contacts SET state = 'in_progress', attempt_id = gen_random_uuid(),
                        lease_expires_at = now() + interval '5 minutes', attempts = attempts + 1
                    WHERE campaign_id = :c AND state = 'initial'
                    RETURNING id, phone_e164, attempt_id
                    """
                ),
                {"c": seed.campaign_id},
            ).all()
        endpoint = WhatsAppEndpoint(sim.base_url, "v21.0", "1234", "sim-token")

        async def send_all() -> list[Any]:
            async with WhatsAppClient() as wa:
                return await asyncio.gather(
                    *(
                        wa.send_template(
                            endpoint,
                            to_e164=row.phone_e164,
                            template="bf_offer",
                            language="en",
                            body_params=[],
                            callback_data=str(row.attempt_id),
                        )
                        for row in claimed
                    )
                )

        results = asyncio.run(send_all())
        assert all(r.wamid for r in results), [r for r in results if not r.wamid]
        # Record only once webhooks have settled some contacts still In progress.
        wait_for(
            lambda: scalar(db, "SELECT count(*) FROM contact_events WHERE source = 'webhook'") > 0,
            10,
            "the first applied webhook",
        )
        for row, result in zip(claimed, results, strict=True):
            dispatch_record(db, row.id, row.attempt_id, result.wamid)

        wanted = {}
        for cid, d in zip(ids, digits, strict=True):
            if int(d[-2:]) < 10:
                wanted[cid] = "delivery_failed"
            else:
                wanted[cid] = "read" if reads(d, rules) else "delivered"

        def states() -> dict[int, str]:
            with db.connect() as conn:
                rows = conn.execute(text("SELECT id, state FROM contacts")).all()
            return {r.id: r.state for r in rows}

        def done() -> bool:
            # What beat's sweep does every 2 s: a "failed" status carries no callback data
            # (as on the platform), so one that beat the record waits for its wamid there.
            webhooks_apply.drain(db, policy=FAST, retries=True)
            return not sim.stats(False)["webhooks_pending"] and states() == wanted

        def differences() -> object:
            now = states()
            return {
                "simulator": sim.stats(False),
                "report": webhooks_report.webhook_report(db).model_dump(
                    exclude={"delivery_failures"}
                ),
                "wrong": {c: (now.get(c), w) for c, w in wanted.items() if now.get(c) != w},
            }

        wait_for(done, 30, "every contact to reach its final state", differences)
        stats = sim.stats()

    assert set(wanted.values()) == {"delivery_failed", "read", "delivered"}
    assert stats["duplicate_count"] == 0 and stats["webhooks_given_up"] == 0, stats
    base = sum(3 if w == "read" else 2 for w in wanted.values())
    assert stats["webhooks_scheduled"] > base  # duplicates were posted
    wamid_of = {row.id: r.wamid for row, r in zip(claimed, results, strict=True)}
    for cid, state in wanted.items():
        stored = contact(db, cid)
        assert stored["wamid"] == wamid_of[cid]
        assert stored["sent_at"] is not None and stored["lease_expires_at"] is None
        if state == "delivery_failed":
            assert (stored["error_code"], stored["failed_at"] is not None) == (131049, True)
        else:
            assert stored["delivered_at"] is not None
            assert (stored["read_at"] is not None) == (state == "read")
    report = webhooks_report.webhook_report(db)
    assert report.inbox["pending"] == report.inbox["rejected"] == report.inbox["unmatched"] == 0
    assert report.status_retries["waiting"] == report.status_retries["unmatched"] == 0
    raced = scalar(
        db, "SELECT count(*) FROM contact_events WHERE detail LIKE '%matched by attempt id%'"
    )
    assert raced > 0  # some webhooks did beat the record, and were matched by attempt id


def test_the_applier_view_reads_what_the_full_model_reads() -> None:
    """WebhookUpdates (the applier's lean model) sees the same statuses and messages as the
    full WebhookPayload, ignores what it does not use, and refuses what the full one refuses."""
    from pydantic import ValidationError

    from schemas.whatsapp import WebhookPayload, WebhookUpdates

    failed = status("wamid.A", "failed", attempt=uuid.uuid4(), code=131026)
    failed["pricing"] = {"billable": False, "brand_new_field": 1}
    body = json.loads(
        envelope(
            [failed, status("wamid.B", "deleted")],
            messages=[text_message("4915123456701", "STOP", wamid="wamid.in.9")],
        )
    )
    body["entry"][0]["changes"].append({"field": "message_template_status_update", "value": {}})
    full, lean = WebhookPayload.model_validate(body), WebhookUpdates.model_validate(body)
    keys = ("id", "status", "timestamp", "recipient_id", "biz_opaque_callback_data", "errors")
    assert [(p, s.model_dump(include=set(keys))) for p, s in full.statuses()] == [
        (p, s.model_dump(include=set(keys))) for p, s in lean.statuses()
    ]
    assert [(p, m.body) for p, m in full.inbound_messages()] == [
        (p, m.body) for p, m in lean.inbound_messages()
    ]
    del body["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
    for model in (WebhookPayload, WebhookUpdates):
        with pytest.raises(ValidationError):
            model.model_validate(body)


def test_inbox_rows_of_every_batch_size_keep_their_order(db: Engine) -> None:
    """The receiver's INSERT is built once per batch size and reused: each batch, of any
    size and in any order of sizes, gets ids in the order of its bodies."""
    from campaigns.storage import webhooks as webhooks_db

    batches = [[f"body {n}-{i}".encode() for i in range(n)] for n in (3, 1, 3, 64, 1, 2)]
    for batch in batches:
        with db.begin() as conn:
            ids = webhooks_db.insert_inbox_many(conn, [(b, "pending", None) for b in batch])
            stored: dict[int, bytes] = dict(
                conn.execute(
                    text("SELECT id, body FROM webhook_inbox WHERE id = ANY(:ids)"), {"ids": ids}
                ).all()
            )
        assert ids == sorted(ids) and len(ids) == len(batch)
        assert [bytes(stored[i]) for i in ids] == batch


def test_the_api_takes_the_resolved_runtime_without_a_thread(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request resolves the runtime dependency: once resolved it is handed over on the
    event loop, not through the threadpool (a thread hop per webhook POST)."""
    from campaigns.api import deps

    resolved = runtime.resolve()

    async def no_thread(*args: object) -> object:
        raise AssertionError("the threadpool was used")

    monkeypatch.setattr(deps, "run_in_threadpool", no_thread)
    assert asyncio.run(deps.get_runtime()) is resolved
    assert asyncio.run(deps.get_engine(resolved)) is resolved.engine
