"""What webhooks prove about people, on the real Postgres: usernames (user-id-only senders and
recipients), the user-id-to-phone map, 131050 by status webhook, and user_preferences."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from campaigns.domain.registry import Change
from campaigns.services import campaigns as campaign_service
from schemas.api import CampaignCreate
from tests.integration.registry_support import OPT_OUTS, learn
from tests.integration.test_uploads import upload_bytes
from tests.integration.test_webhooks import TS, Seed, contact, deliver, status, text_message

USER = "US.13491208655302741918"
PHONE = "4915123456777"


def body(field: str = "messages", **value: Any) -> bytes:
    import json

    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1234"},
        **value,
    }
    envelope = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000001", "changes": [{"field": field, "value": value}]}],
    }
    return json.dumps(envelope).encode()


def opt_outs(db: Engine) -> list[tuple[str, str]]:
    with db.connect() as conn:
        rows = conn.execute(text(OPT_OUTS + " ORDER BY 1, 2"))
        return [(r.phone_e164, r.source) for r in rows]


def preference(value: str, *, wa_id: str | None = PHONE, user_id: str | None = None) -> bytes:
    item: dict[str, Any] = {
        "detail": "User requested to change marketing messages",
        "category": "marketing_messages",
        "value": value,
        "timestamp": TS,
    }
    if wa_id:
        item["wa_id"] = wa_id
    if user_id:
        item["user_id"] = user_id
    contact: dict[str, Any] = {"profile": {"name": "Sheena"}}
    contact |= {"wa_id": wa_id} if wa_id else {}
    contact |= {"user_id": user_id} if user_id else {}
    return body("user_preferences", contacts=[contact], user_preferences=[item])


def upload_reasons(db: Engine, phone: str) -> dict[str, int]:
    campaign_id = campaign_service.create_campaign(
        db, CampaignCreate(name="later", template="bf_offer", region="DE")
    ).id
    return upload_bytes(db, campaign_id, f"phone,name\n{phone},A\n".encode()).reasons


def test_a_stop_beside_statuses_of_a_username_only_user_loses_nothing(db: Engine) -> None:
    seed = Seed(db)
    delivered = seed.contact("sent", wamid="wamid.out.1")
    read = seed.contact("sent", wamid="wamid.out.2")
    delivered_status = status("wamid.out.1", "delivered")
    del delivered_status["recipient_id"]  # a username user: only the user id
    delivered_status["recipient_user_id"] = USER
    read_status = {**status("wamid.out.2", "read"), "recipient_user_id": "US.42"}
    stop = text_message(PHONE, "STOP", wamid="wamid.in.stop")
    del stop["from"]
    stop["from_user_id"] = USER
    stats = deliver(
        db,
        body(
            contacts=[{"profile": {"name": "Sheena", "username": "@sheena"}, "user_id": USER}],
            messages=[stop],
            statuses=[delivered_status, read_status],
        ),
    )
    assert (stats.rejected, stats.moved, stats.inbound) == (0, 2, 1)
    assert contact(db, delivered)["state"] == "delivered"
    assert contact(db, read)["state"] == "read"
    with db.connect() as conn:
        stored = conn.execute(text("SELECT from_wa_id, from_user_id, text FROM inbound_messages"))
        assert [tuple(r) for r in stored] == [(None, USER, "STOP")]
        inbox = conn.execute(text("SELECT status FROM webhook_inbox")).scalars().all()
    assert inbox == ["applied"]
    # The read status showed a phone and a user id together: the pair is kept.
    with db.connect() as conn:
        pairs = conn.execute(text("SELECT user_id, phone_e164 FROM user_ids")).all()
    assert [tuple(p) for p in pairs] == [("US.42", "+4915123456701")]
    # The STOP is kept against the user id until its phone is known ...
    assert opt_outs(db) == [(f"user:{USER}", "whatsapp reply")]
    assert upload_reasons(db, "+" + PHONE) == {}
    # ... and reaches the phone as soon as a payload shows both.
    later = text_message(PHONE, "thanks", wamid="wamid.in.later")
    later["from_user_id"] = USER
    stats = deliver(db, body(contacts=[{"wa_id": PHONE, "user_id": USER}], messages=[later]))
    assert (stats.user_ids, stats.opt_outs) == (1, 1)
    assert opt_outs(db) == [("+" + PHONE, "whatsapp reply"), (f"user:{USER}", "whatsapp reply")]
    assert upload_reasons(db, "+" + PHONE) == {"opted_out": 1}


def test_a_user_id_only_stop_reaches_a_phone_already_known(db: Engine) -> None:
    deliver(db, body(contacts=[{"wa_id": PHONE, "user_id": USER}]))
    stop = text_message(PHONE, "stop", wamid="wamid.in.2")
    del stop["from"]
    stop["from_user_id"] = USER
    stats = deliver(db, body(messages=[stop]))
    assert stats.opt_outs == 2  # the user id's row and the phone's
    assert ("+" + PHONE, "whatsapp reply") in opt_outs(db)


def test_131050_in_a_failed_status_opts_the_recipient_out(db: Engine) -> None:
    seed = Seed(db)
    sent = seed.contact("sent", wamid="wamid.out.9", phone="+" + PHONE)
    failed = status("wamid.out.9", "failed", code=131050, recipient=PHONE)
    other = status("wamid.unknown", "failed", code=131026, recipient="4915123456799")
    stats = deliver(db, body(statuses=[failed, other]))
    assert contact(db, sent)["state"] == "delivery_failed"
    assert contact(db, sent)["error_code"] == 131050
    assert stats.opt_outs == 1
    assert opt_outs(db) == [("+" + PHONE, "platform 131050")]
    # a duplicate changes nothing
    assert deliver(db, body(statuses=[failed])).opt_outs == 0


def test_user_preferences_stop_then_resume(db: Engine) -> None:
    stats = deliver(db, preference("stop"))
    assert stats.opt_outs == 1
    assert opt_outs(db) == [("+" + PHONE, "user_preferences")]
    assert upload_reasons(db, "+" + PHONE) == {"opted_out": 1}
    stats = deliver(db, preference("resume"))
    assert stats.opt_ins == 1
    assert opt_outs(db) == []
    assert upload_reasons(db, "+" + PHONE) == {}


def test_resume_never_lifts_a_stop_reply_or_an_operators_opt_out(db: Engine) -> None:
    deliver(db, body(messages=[text_message(PHONE, "STOP", wamid="wamid.in.s")]))
    learn(db, "+4915123456788", Change.OPTED_OUT, source="operator")
    deliver(db, preference("stop"))  # already opted out by the reply: the row stays the reply's
    stats = deliver(db, preference("resume"))
    assert stats.opt_ins == 0
    assert deliver(db, preference("resume", wa_id="4915123456788")).opt_ins == 0
    assert opt_outs(db) == [
        ("+" + PHONE, "whatsapp reply"),
        ("+4915123456788", "operator"),
    ]


def test_other_preference_categories_do_nothing(db: Engine) -> None:
    raw = preference("stop").replace(b"marketing_messages", b"utility_messages")
    stats = deliver(db, raw)
    assert (stats.rejected, stats.opt_outs) == (0, 0)
    assert opt_outs(db) == []


def test_preferences_by_user_id_reach_the_phone_and_resume_by_phone_lifts_both(
    db: Engine,
) -> None:
    stats = deliver(db, preference("stop", wa_id=None, user_id=USER))
    assert opt_outs(db) == [(f"user:{USER}", "user_preferences")]
    assert stats.opt_outs == 1
    # A status showing both: the pair is learnt and the opt-out reaches the phone.
    shown = {**status("wamid.x", "sent", recipient=PHONE), "recipient_user_id": USER}
    stats = deliver(db, body(statuses=[shown]))
    assert (stats.user_ids, stats.opt_outs) == (1, 1)
    assert opt_outs(db) == [("+" + PHONE, "user_preferences"), (f"user:{USER}", "user_preferences")]
    # Resumed by phone only: the user id's row goes too, or it would opt the phone out again.
    stats = deliver(db, preference("resume"))
    assert stats.opt_ins == 2
    assert opt_outs(db) == []
    assert deliver(db, body(statuses=[shown])).opt_outs == 0
