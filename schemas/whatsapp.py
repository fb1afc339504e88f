"""Boundary payloads of the WhatsApp Cloud API (send, errors, webhooks) and webhook signatures.

Every model tolerates fields it does not know (``extra="allow"``): the platform adds fields
without notice and a webhook must never be refused because of one. Values the project
branches on (``Status.status``, error ``code``) are kept as plain ``str``/``int`` so that an
unknown status such as ``"deleted"`` or an unlisted error code still parses.

``sign_payload`` / ``verify_signature`` implement ``X-Hub-Signature-256``: HMAC-SHA256 of the
exact raw body bytes keyed with the app secret, hex digest, prefixed ``sha256=``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SIGNATURE_HEADER",
    "Change",
    "ChangeValue",
    "Component",
    "Conversation",
    "ConversationOrigin",
    "Entry",
    "ErrorData",
    "ErrorResponse",
    "GraphError",
    "InboundButton",
    "InboundMessage",
    "InboundText",
    "Language",
    "Metadata",
    "Parameter",
    "Pricing",
    "SendContact",
    "SendMessage",
    "SendResponse",
    "Status",
    "StatusError",
    "StatusErrorData",
    "StatusUpdate",
    "Template",
    "TemplateSendRequest",
    "UpdateChange",
    "UpdateEntry",
    "UpdateValue",
    "WebhookContact",
    "WebhookPayload",
    "WebhookProfile",
    "WebhookUpdates",
    "sign_payload",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE_PREFIX = "sha256="


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- send request


class Parameter(_Model):
    type: str = "text"
    text: str | None = None


class Component(_Model):
    type: str
    sub_type: str | None = None
    index: str | int | None = None
    parameters: list[Parameter] = Field(default_factory=list)


class Language(_Model):
    code: str
    policy: str | None = None


class Template(_Model):
    name: str
    language: Language
    components: list[Component] = Field(default_factory=list)


class TemplateSendRequest(_Model):
    """Body of ``POST /{version}/{phone_number_id}/messages`` for a template message."""

    messaging_product: Literal["whatsapp"] = "whatsapp"
    recipient_type: str = "individual"
    to: str
    type: Literal["template"] = "template"
    template: Template
    biz_opaque_callback_data: str | None = Field(default=None, max_length=512)


# --------------------------------------------------------------------------- send response


class SendContact(_Model):
    input: str
    wa_id: str


class SendMessage(_Model):
    id: str
    message_status: str | None = None


class SendResponse(_Model):
    """HTTP 200 body of a send: the wamid is ``messages[0].id``."""

    messaging_product: str = "whatsapp"
    contacts: list[SendContact] = Field(default_factory=list)
    messages: list[SendMessage]

    @property
    def wamid(self) -> str:
        return self.messages[0].id

    @property
    def wa_id(self) -> str | None:
        return self.contacts[0].wa_id if self.contacts else None


class ErrorData(_Model):
    messaging_product: str | None = None
    details: str | None = None


class GraphError(_Model):
    message: str = ""
    type: str | None = None
    code: int
    error_subcode: int | None = None
    error_data: ErrorData | None = None
    error_user_title: str | None = None
    error_user_msg: str | None = None
    fbtrace_id: str | None = None

    @property
    def details(self) -> str | None:
        return self.error_data.details if self.error_data else None


class ErrorResponse(_Model):
    """Graph API error body (HTTP 4xx/5xx). Decide on ``error.code``, never on the text."""

    error: GraphError


# --------------------------------------------------------------------------- webhooks


class Metadata(_Model):
    display_phone_number: str | None = None
    phone_number_id: str


class ConversationOrigin(_Model):
    type: str | None = None


class Conversation(_Model):
    id: str | None = None
    origin: ConversationOrigin | None = None
    expiration_timestamp: str | None = None


class Pricing(_Model):
    billable: bool | None = None
    pricing_model: str | None = None
    category: str | None = None
    type: str | None = None


class StatusErrorData(_Model):
    details: str | None = None


class StatusError(_Model):
    code: int
    title: str | None = None
    message: str | None = None
    error_data: StatusErrorData | None = None
    href: str | None = None


class Status(_Model):
    """One status of an outbound message. ``status`` stays a ``str``: unknown values parse."""

    id: str
    status: str
    timestamp: str
    recipient_id: str | None = None
    biz_opaque_callback_data: str | None = None
    conversation: Conversation | None = None
    pricing: Pricing | None = None
    errors: list[StatusError] = Field(default_factory=list)


class InboundText(_Model):
    body: str


class InboundButton(_Model):
    """A quick-reply button press: ``text`` is the button's label (e.g. "STOP")."""

    text: str | None = None
    payload: str | None = None


class InboundMessage(_Model):
    from_: str = Field(alias="from")
    id: str
    timestamp: str
    type: str
    text: InboundText | None = None
    button: InboundButton | None = None

    @property
    def body(self) -> str | None:
        """What the person wrote or pressed (text body or button label), if any."""
        if self.text is not None:
            return self.text.body
        if self.button is not None:
            return self.button.text
        return None


class WebhookProfile(_Model):
    name: str | None = None


class WebhookContact(_Model):
    wa_id: str | None = None
    profile: WebhookProfile | None = None


class ChangeValue(_Model):
    messaging_product: str | None = None
    metadata: Metadata | None = None
    statuses: list[Status] = Field(default_factory=list)
    messages: list[InboundMessage] = Field(default_factory=list)
    contacts: list[WebhookContact] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)


class Change(_Model):
    field: str
    value: ChangeValue


class Entry(_Model):
    id: str
    changes: list[Change] = Field(default_factory=list)


class WebhookPayload(_Model):
    """Envelope of every webhook POST. Other ``field`` values share the URL: filter on it."""

    object: str
    entry: list[Entry] = Field(default_factory=list)

    def statuses(self) -> list[tuple[str | None, Status]]:
        """All statuses of ``field == "messages"`` changes, with their phone number id."""
        out: list[tuple[str | None, Status]] = []
        for entry in self.entry:
            for change in entry.changes:
                if change.field != "messages":
                    continue
                pnid = change.value.metadata.phone_number_id if change.value.metadata else None
                out.extend((pnid, s) for s in change.value.statuses)
        return out

    def inbound_messages(self) -> list[tuple[str | None, InboundMessage]]:
        """All inbound user messages of ``field == "messages"`` changes."""
        out: list[tuple[str | None, InboundMessage]] = []
        for entry in self.entry:
            for change in entry.changes:
                if change.field != "messages":
                    continue
                pnid = change.value.metadata.phone_number_id if change.value.metadata else None
                out.extend((pnid, m) for m in change.value.messages)
        return out


# --------------------------------------------------------------------------- applier view


class _Lean(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class StatusUpdate(_Lean):
    """A status as the applier reads it: only what it acts on (the raw body is kept)."""

    id: str
    status: str
    timestamp: str
    recipient_id: str | None = None
    biz_opaque_callback_data: str | None = None
    errors: list[StatusError] = Field(default_factory=list)


class UpdateValue(_Lean):
    metadata: Metadata | None = None
    statuses: list[StatusUpdate] = Field(default_factory=list)
    messages: list[InboundMessage] = Field(default_factory=list)


class UpdateChange(_Lean):
    field: str
    value: UpdateValue


class UpdateEntry(_Lean):
    id: str
    changes: list[UpdateChange] = Field(default_factory=list)


class WebhookUpdates(_Lean):
    """:class:`WebhookPayload` as the applier needs it, for its hot path.

    Same envelope and the same required fields, but unknown and unused fields (conversation,
    pricing, contacts, ...) are skipped instead of kept: thousands of statuses a second
    validate about three times faster. The stored raw body still has everything.
    """

    object: str
    entry: list[UpdateEntry] = Field(default_factory=list)

    def statuses(self) -> list[tuple[str | None, StatusUpdate]]:
        """All statuses of ``field == "messages"`` changes, with their phone number id."""
        out: list[tuple[str | None, StatusUpdate]] = []
        for entry in self.entry:
            for change in entry.changes:
                if change.field != "messages":
                    continue
                pnid = change.value.metadata.phone_number_id if change.value.metadata else None
                out.extend((pnid, s) for s in change.value.statuses)
        return out

    def inbound_messages(self) -> list[tuple[str | None, InboundMessage]]:
        """All inbound user messages of ``field == "messages"`` changes."""
        out: list[tuple[str | None, InboundMessage]] = []
        for entry in self.entry:
            for change in entry.changes:
                if change.field != "messages":
                    continue
                pnid = change.value.metadata.phone_number_id if change.value.metadata else None
                out.extend((pnid, m) for m in change.value.messages)
        return out


# --------------------------------------------------------------------------- signatures


def sign_payload(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``"sha256=<hex hmac>"``."""
    digest = hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return _SIGNATURE_PREFIX + digest


def verify_signature(body: bytes, header: str | None, app_secret: str) -> bool:
    """True when ``header`` is the signature of the raw ``body`` (constant-time compare).

    A missing or malformed header, or an empty secret, is never valid.
    """
    if not header or not app_secret:
        return False
    given = header.strip().lower()
    if not given.startswith(_SIGNATURE_PREFIX):
        return False
    expected = sign_payload(body, app_secret)
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
