"""The Cloud API boundary models parse the platform's payloads; webhook signatures hold."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.whatsapp import (
    ErrorResponse,
    SendResponse,
    TemplateSendRequest,
    WebhookPayload,
    WebhookUpdates,
    sign_payload,
    verify_signature,
)

SEND_REQUEST = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "to": "4915123456789",
    "type": "template",
    "template": {
        "name": "bf_offer",
        "language": {"code": "en"},
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Anna"}]},
            {"type": "header", "parameters": [{"type": "text", "text": "Hi"}]},
            {
                "type": "button",
                "sub_type": "url",
                "index": "0",
                "parameters": [{"type": "text", "text": "abc"}],
            },
        ],
    },
    "biz_opaque_callback_data": "attempt-42",
}

SEND_SUCCESS = {
    "messaging_product": "whatsapp",
    "contacts": [{"input": "4915123456789", "wa_id": "4915123456789"}],
    "messages": [{"id": "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABEYEjQ", "message_status": "accepted"}],
}

SEND_ERROR = {
    "error": {
        "message": "(#131026) Message undeliverable",
        "type": "OAuthException",
        "code": 131026,
        "error_subcode": 2494010,
        "error_data": {"messaging_product": "whatsapp", "details": "not on WhatsApp"},
        "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
    }
}

WEBHOOK = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": "15550001111",
                            "phone_number_id": "1234",
                        },
                        "statuses": [
                            {
                                "id": "wamid.AAA",
                                "status": "delivered",
                                "timestamp": "1732700000",
                                "recipient_id": "4915123456789",
                                "biz_opaque_callback_data": "attempt-42",
                                "conversation": {
                                    "id": "c0nv",
                                    "origin": {"type": "marketing"},
                                    "expiration_timestamp": "1732786400",
                                },
                                "pricing": {
                                    "billable": True,
                                    "pricing_model": "CBP",
                                    "category": "marketing",
                                },
                            },
                            {
                                "id": "wamid.BBB",
                                "status": "failed",
                                "timestamp": "1732700005",
                                "recipient_id": "4915123456780",
                                "errors": [
                                    {
                                        "code": 131026,
                                        "title": "Message undeliverable",
                                        "message": "Message undeliverable",
                                        "error_data": {"details": "old client"},
                                    }
                                ],
                            },
                            {
                                "id": "wamid.CCC",
                                "status": "deleted",
                                "timestamp": "1732700009",
                                "recipient_id": "4915123456781",
                            },
                        ],
                        "contacts": [{"profile": {"name": "Anna"}, "wa_id": "4915123456789"}],
                        "messages": [
                            {
                                "from": "4915123456789",
                                "id": "wamid.IN1",
                                "timestamp": "1732700010",
                                "type": "text",
                                "text": {"body": "STOP"},
                            }
                        ],
                        "errors": [{"code": 131000, "title": "Something went wrong"}],
                    },
                },
                {
                    "field": "message_template_status_update",
                    "value": {
                        "event": "APPROVED",
                        "message_template_id": 123,
                        "message_template_name": "bf_offer",
                    },
                },
            ],
        }
    ],
}


def test_send_request_parses_the_sample_and_round_trips() -> None:
    req = TemplateSendRequest.model_validate(SEND_REQUEST)
    assert req.to == "4915123456789"
    assert req.template.name == "bf_offer"
    assert req.template.language.code == "en"
    assert [c.type for c in req.template.components] == ["body", "header", "button"]
    button = req.template.components[2]
    assert (button.sub_type, button.index, button.parameters[0].text) == ("url", "0", "abc")
    assert req.biz_opaque_callback_data == "attempt-42"
    dumped = req.model_dump(exclude_none=True)
    assert dumped["template"]["components"][0]["parameters"] == [{"type": "text", "text": "Anna"}]
    assert dumped["messaging_product"] == "whatsapp"


def test_send_request_defaults_and_required_fields() -> None:
    req = TemplateSendRequest(
        to="49151",
        template={"name": "t", "language": {"code": "de"}},
        biz_opaque_callback_data=None,
    )
    assert (req.messaging_product, req.recipient_type, req.type) == (
        "whatsapp",
        "individual",
        "template",
    )
    body = {k: v for k, v in SEND_REQUEST.items() if k != "to"}
    with pytest.raises(ValidationError):
        TemplateSendRequest.model_validate(body)
    with pytest.raises(ValidationError):
        TemplateSendRequest.model_validate({**SEND_REQUEST, "type": "text"})
    with pytest.raises(ValidationError):
        TemplateSendRequest.model_validate({**SEND_REQUEST, "biz_opaque_callback_data": "x" * 513})


def test_send_success_parses() -> None:
    resp = SendResponse.model_validate(SEND_SUCCESS)
    assert resp.wamid == "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABEYEjQ"
    assert resp.wa_id == "4915123456789"
    assert resp.messages[0].message_status == "accepted"
    assert resp.contacts[0].input == "4915123456789"


def test_error_body_parses() -> None:
    err = ErrorResponse.model_validate(SEND_ERROR).error
    assert err.code == 131026
    assert err.error_subcode == 2494010
    assert err.details == "not on WhatsApp"
    assert err.error_data is not None and err.error_data.messaging_product == "whatsapp"
    assert err.fbtrace_id == "Az8or2yhqkZfEZ-_4Qn_Bam"
    minimal = ErrorResponse.model_validate({"error": {"message": "x", "code": 190}}).error
    assert (minimal.code, minimal.error_subcode, minimal.details) == (190, None, None)


def test_webhook_with_statuses_messages_errors_and_unknown_status() -> None:
    payload = WebhookPayload.model_validate_json(json.dumps(WEBHOOK))
    assert payload.object == "whatsapp_business_account"
    value = payload.entry[0].changes[0].value
    assert value.metadata is not None and value.metadata.phone_number_id == "1234"
    delivered, failed, deleted = value.statuses
    assert (delivered.status, delivered.timestamp) == ("delivered", "1732700000")
    assert delivered.biz_opaque_callback_data == "attempt-42"
    assert delivered.conversation is not None and delivered.conversation.origin is not None
    assert delivered.conversation.origin.type == "marketing"
    assert delivered.pricing is not None and delivered.pricing.billable is True
    assert delivered.errors == []
    assert failed.errors[0].code == 131026
    assert failed.errors[0].error_data is not None
    assert failed.errors[0].error_data.details == "old client"
    assert failed.biz_opaque_callback_data is None and failed.conversation is None
    assert deleted.status == "deleted"
    inbound = value.messages[0]
    assert (inbound.from_, inbound.type, inbound.text and inbound.text.body) == (
        "4915123456789",
        "text",
        "STOP",
    )
    assert value.contacts[0].wa_id == "4915123456789"
    assert value.errors[0]["code"] == 131000
    # the template-status change shares the URL and parses with empty lists
    other = payload.entry[0].changes[1]
    assert other.field == "message_template_status_update"
    assert other.value.statuses == [] and other.value.metadata is None
    # helpers only look at field == "messages"
    assert [(pnid, s.id) for pnid, s in payload.statuses()] == [
        ("1234", "wamid.AAA"),
        ("1234", "wamid.BBB"),
        ("1234", "wamid.CCC"),
    ]
    assert [m.id for _, m in payload.inbound_messages()] == ["wamid.IN1"]


def test_unknown_fields_are_kept_not_refused() -> None:
    data = json.loads(json.dumps(WEBHOOK))
    data["brand_new_top"] = 1
    data["entry"][0]["changes"][0]["value"]["statuses"][0]["brand_new"] = {"x": 1}
    data["entry"][0]["changes"][0]["value"]["statuses"][0]["pricing"]["type"] = "regular"
    payload = WebhookPayload.model_validate(data)
    status = payload.entry[0].changes[0].value.statuses[0]
    assert status.model_extra == {"brand_new": {"x": 1}}
    assert status.pricing is not None and status.pricing.type == "regular"
    assert payload.model_extra == {"brand_new_top": 1}
    resp = SendResponse.model_validate({**SEND_SUCCESS, "extra": True})
    assert resp.wamid.startswith("wamid.")


def test_webhook_missing_required_status_fields_is_refused() -> None:
    data = json.loads(json.dumps(WEBHOOK))
    del data["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
    with pytest.raises(ValidationError):
        WebhookPayload.model_validate(data)


# --------------------------------------------------------------------------- signatures

BODY = b'{"object":"whatsapp_business_account","entry":[]}'
SECRET = "app-secret-123"
# openssl dgst -sha256 -hmac app-secret-123 of BODY
KNOWN = "sha256=20e391a99a86fc5adf7e3a453236d20c906360291977896cf2f671e03bb95703"


def test_sign_payload_matches_an_independent_hmac() -> None:
    assert sign_payload(BODY, SECRET) == KNOWN


def test_verify_signature_accepts_the_right_one() -> None:
    assert verify_signature(BODY, KNOWN, SECRET) is True
    assert verify_signature(BODY, KNOWN.upper().replace("SHA256=", "sha256="), SECRET) is True
    assert verify_signature(BODY, " " + KNOWN + " ", SECRET) is True


@pytest.mark.parametrize(
    ("body", "header", "secret"),
    [
        pytest.param(BODY, KNOWN, "other-secret", id="wrong-secret"),
        pytest.param(BODY + b" ", KNOWN, SECRET, id="tampered-body"),
        pytest.param(BODY.replace(b"[]", b"[{}]"), KNOWN, SECRET, id="tampered-json"),
        pytest.param(BODY, None, SECRET, id="missing-header"),
        pytest.param(BODY, "", SECRET, id="empty-header"),
        pytest.param(BODY, KNOWN.removeprefix("sha256="), SECRET, id="no-prefix"),
        pytest.param(BODY, "sha1=" + KNOWN[7:], SECRET, id="other-algorithm"),
        pytest.param(BODY, KNOWN[:-1], SECRET, id="truncated"),
        pytest.param(BODY, "sha256=ü" + KNOWN[8:], SECRET, id="non-ascii"),
        pytest.param(BODY, sign_payload(BODY, ""), "", id="empty-secret"),
    ],
)
def test_verify_signature_refuses(body: bytes, header: str | None, secret: str) -> None:
    assert verify_signature(body, header, secret) is False


# --------------------------------------------------------------------------- 2026 shapes
# Built from Meta's webhook references (messages, status, user_preferences, business-scoped
# user ids) and the Message API's send answer; ids as the references write them.

PNID = "106540352242922"


def _envelope(field: str, value: dict[str, object]) -> dict[str, object]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": field, "value": value}]}],
    }


_META = {"display_phone_number": "15550783881", "phone_number_id": PNID}

USERNAME_ONLY_AND_STATUSES = _envelope(
    "messages",
    {
        "messaging_product": "whatsapp",
        "metadata": _META,
        # A user with a username: the contact has the business-scoped user id, no wa_id.
        "contacts": [
            {
                "profile": {"name": "Sheena Nelson", "username": "@sheena"},
                "user_id": "US.13491208655302741918",
            }
        ],
        "messages": [
            {
                "from_user_id": "US.13491208655302741918",
                "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
                "timestamp": "1749416383",
                "type": "text",
                "text": {"body": "STOP"},
            }
        ],
        "statuses": [
            {
                "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0YA",
                "status": "delivered",
                "timestamp": "1750263773",
                "recipient_user_id": "US.13491208655302741918",
                "biz_opaque_callback_data": "attempt-1",
                "pricing": {
                    "billable": True,
                    "pricing_model": "PMP",
                    "category": "marketing",
                    "type": "regular",
                },
            },
            {
                "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0ZA",
                "status": "read",
                "timestamp": "1750263774",
                "recipient_id": "16505551234",
                "recipient_user_id": "US.13491208655302741918",
            },
        ],
    },
)


def test_message_without_from_parses_beside_statuses() -> None:
    """One message lacking ``from`` never rejects the body: statuses and a STOP both kept."""
    for model in (WebhookPayload, WebhookUpdates):
        payload = model.model_validate_json(json.dumps(USERNAME_ONLY_AND_STATUSES))
        [(pnid, message)] = payload.inbound_messages()
        assert pnid == PNID
        assert message.from_ is None
        assert message.from_user_id == "US.13491208655302741918"
        assert message.body == "STOP"
        delivered, read = (s for _, s in payload.statuses())
        assert delivered.recipient_id is None
        assert delivered.recipient_user_id == "US.13491208655302741918"
        assert (read.recipient_id, read.recipient_user_id) == (
            "16505551234",
            "US.13491208655302741918",
        )
        [contact] = payload.contacts()
        assert (contact.wa_id, contact.user_id) == (None, "US.13491208655302741918")


def test_contact_with_username_and_pmp_pricing_parse() -> None:
    payload = WebhookPayload.model_validate(USERNAME_ONLY_AND_STATUSES)
    [contact] = payload.contacts()
    assert contact.profile is not None and contact.profile.username == "@sheena"
    status = payload.statuses()[0][1]
    assert status.pricing is not None
    assert (status.pricing.pricing_model, status.pricing.category, status.pricing.type) == (
        "PMP",
        "marketing",
        "regular",
    )
    assert status.conversation is None  # PMP statuses carry no conversation object


def test_contact_with_both_phone_and_user_id() -> None:
    data = _envelope(
        "messages",
        {
            "messaging_product": "whatsapp",
            "metadata": _META,
            "contacts": [
                {
                    "profile": {"name": "Krish"},
                    "wa_id": "919810218674",
                    "user_id": "IN.1410018717833190",
                    "country_code": "IN",
                }
            ],
            "messages": [
                {
                    "from": "919810218674",
                    "from_user_id": "IN.1410018717833190",
                    "id": "wamid.HBgMOTE5ODEwMjE4Njc0FQIAEhggQUM4",
                    "timestamp": "1779372805",
                    "text": {"body": "Hey"},
                    "type": "text",
                }
            ],
        },
    )
    updates = WebhookUpdates.model_validate(data)
    [contact] = updates.contacts()
    assert (contact.wa_id, contact.user_id) == ("919810218674", "IN.1410018717833190")
    message = updates.inbound_messages()[0][1]
    assert (message.from_, message.from_user_id) == ("919810218674", "IN.1410018717833190")


USER_PREFERENCES = _envelope(
    "user_preferences",
    {
        "messaging_product": "whatsapp",
        "metadata": _META,
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
        "user_preferences": [
            {
                "wa_id": "16505551234",
                "detail": "User requested to stop marketing messages",
                "category": "marketing_messages",
                "value": "stop",
                "timestamp": 1731705721,
            }
        ],
    },
)


def test_user_preferences_webhook_parses() -> None:
    for model in (WebhookPayload, WebhookUpdates):
        payload = model.model_validate(USER_PREFERENCES)
        [(pnid, pref)] = payload.user_preferences()
        assert pnid == PNID
        assert (pref.wa_id, pref.category, pref.value) == (
            "16505551234",
            "marketing_messages",
            "stop",
        )
        assert pref.detail == "User requested to stop marketing messages"
        assert payload.statuses() == [] and payload.inbound_messages() == []
    # user_preferences of a "messages" change are not read as preferences, nor the reverse
    assert WebhookUpdates.model_validate(USERNAME_ONLY_AND_STATUSES).user_preferences() == []


@pytest.mark.parametrize("status", ["accepted", "held_for_quality_assessment", "paused"])
def test_send_answer_with_user_id_and_message_status(status: str) -> None:
    resp = SendResponse.model_validate(
        {
            "messaging_product": "whatsapp",
            "contacts": [
                {"input": "US.13491208655302741918", "user_id": "US.13491208655302741918"}
            ],
            "messages": [
                {
                    "id": "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA",
                    "message_status": status,
                }
            ],
        }
    )
    assert resp.wa_id is None
    assert resp.user_id == "US.13491208655302741918"
    assert resp.message_status == status


def test_send_request_named_parameters_upper_case_and_recipient() -> None:
    req = TemplateSendRequest.model_validate(
        {
            "messaging_product": "whatsapp",
            "recipient": "US.13491208655302741918",
            "type": "template",
            "template": {
                "name": "order_confirmation",
                "language": {"code": "en_US"},
                "components": [
                    {
                        "type": "BODY",
                        "parameters": [
                            {"type": "text", "parameter_name": "first_name", "text": "Jessica"}
                        ],
                    }
                ],
            },
        }
    )
    assert req.to is None and req.recipient == "US.13491208655302741918"
    [component] = req.template.components
    assert component.type == "BODY"
    assert component.parameters[0].parameter_name == "first_name"
