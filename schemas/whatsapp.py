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
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "SIGNATURE_HEADER",
    "Change",
    "ChangeValue",
    "Component",
    "ContactIds",
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
    "UserPreference",
    "WebhookContact",
    "WebhookPayload",
    "WebhookProfile",
    "WebhookUpdates",
    "sign_payload",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Hub-Signature-256"
_V = TypeVar("_V", covariant=True)
_SIGNATURE_PREFIX = "sha256="


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- send request


class Parameter(_Model):
    type: str = "text"
    text: str | None = None
    parameter_name: str | None = None  # named template variables ({{first_name}})


class Component(_Model):
    type: str  # case-insensitive on the platform ("body" or "BODY")
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
    # A phone number (``to``) or, for a user known only by a username, the business-scoped
    # user id (``recipient``).
    to: str | None = None
    recipient: str | None = None
    type: Literal["template"] = "template"
    template: Template
    biz_opaque_callback_data: str | None = Field(default=None, max_length=512)

    @model_validator(mode="after")
    def _addressed(self) -> TemplateSendRequest:
        if not self.to and not self.recipient:
            raise ValueError("to or recipient is required")
        return self


# --------------------------------------------------------------------------- send response


class SendContact(_Model):
    input: str | None = None
    wa_id: str | None = None
    user_id: str | None = None  # business-scoped user id (a user with a username)


class SendMessage(_Model):
    id: str
    # "accepted", "held_for_quality_assessment" or "paused"
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

    @property
    def user_id(self) -> str | None:
        return self.contacts[0].user_id if self.contacts else None

    @property
    def message_status(self) -> str | None:
        return self.messages[0].message_status


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
    recipient_id: str | None = None  # absent for a user known only by a username
    recipient_user_id: str | None = None  # business-scoped user id, beside or instead
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
    """A user's message. ``from`` (the phone) is absent for a user known only by a username:
    then ``from_user_id`` (the business-scoped user id) names the sender."""

    from_: str | None = Field(default=None, alias="from")
    from_user_id: str | None = None
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
    username: str | None = None


class WebhookContact(_Model):
    """A user the change is about: the phone (``wa_id``), the business-scoped user id
    (``user_id``), or both."""

    wa_id: str | None = None
    user_id: str | None = None
    username: str | None = None
    profile: WebhookProfile | None = None


class UserPreference(_Model):
    """One ``user_preferences`` item: a user stopped or resumed marketing messages."""

    wa_id: str | None = None
    user_id: str | None = None
    detail: str | None = None
    category: str | None = None  # "marketing_messages"
    value: str | None = None  # "stop" or "resume"
    timestamp: str | int | None = None


class ChangeValue(_Model):
    messaging_product: str | None = None
    metadata: Metadata | None = None
    statuses: list[Status] = Field(default_factory=list)
    messages: list[InboundMessage] = Field(default_factory=list)
    contacts: list[WebhookContact] = Field(default_factory=list)
    user_preferences: list[UserPreference] = Field(default_factory=list)
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
        return [(pnid, s) for pnid, v in _values(self.entry, "messages") for s in v.statuses]

    def inbound_messages(self) -> list[tuple[str | None, InboundMessage]]:
        """All inbound user messages of ``field == "messages"`` changes."""
        return [(pnid, m) for pnid, v in _values(self.entry, "messages") for m in v.messages]

    def user_preferences(self) -> list[tuple[str | None, UserPreference]]:
        """All items of ``field == "user_preferences"`` changes."""
        changes = _values(self.entry, "user_preferences")
        return [(pnid, p) for pnid, v in changes for p in v.user_preferences]

    def contacts(self) -> list[WebhookContact]:
        """Every ``value.contacts[]`` item, whatever the field."""
        return [c for entry in self.entry for ch in entry.changes for c in ch.value.contacts]


class _HasChanges(Protocol[_V]):
    @property
    def changes(self) -> Sequence[_HasValue[_V]]: ...


class _HasValue(Protocol[_V]):
    @property
    def field(self) -> str: ...

    @property
    def value(self) -> _V: ...


def _values(entries: Iterable[_HasChanges[_V]], field: str) -> Iterator[tuple[str | None, _V]]:
    """(phone number id, value) of every change with this ``field``."""
    for entry in entries:
        for change in entry.changes:
            if change.field == field:
                meta = getattr(change.value, "metadata", None)
                yield (meta.phone_number_id if meta is not None else None), change.value


# --------------------------------------------------------------------------- applier view


class _Lean(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class StatusUpdate(_Lean):
    """A status as the applier reads it: only what it acts on (the raw body is kept)."""

    id: str
    status: str
    timestamp: str
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    biz_opaque_callback_data: str | None = None
    errors: list[StatusError] = Field(default_factory=list)


class ContactName(_Lean):
    name: str | None = None


class ContactIds(_Lean):
    """A ``value.contacts[]`` item as the applier reads it: who is who, and the profile
    name an inbound message shows (the profile's ``whatsapp_profile_name``)."""

    wa_id: str | None = None
    user_id: str | None = None
    profile: ContactName | None = None


class UpdateValue(_Lean):
    metadata: Metadata | None = None
    statuses: list[StatusUpdate] = Field(default_factory=list)
    messages: list[InboundMessage] = Field(default_factory=list)
    contacts: list[ContactIds] = Field(default_factory=list)
    user_preferences: list[UserPreference] = Field(default_factory=list)


class UpdateChange(_Lean):
    field: str
    value: UpdateValue


class UpdateEntry(_Lean):
    id: str
    changes: list[UpdateChange] = Field(default_factory=list)


class WebhookUpdates(_Lean):
    """:class:`WebhookPayload` as the applier needs it, for its hot path.

    Same envelope and the same required fields, but unknown and unused fields (conversation,
    pricing, profiles, ...) are skipped instead of kept: thousands of statuses a second
    validate about three times faster. The stored raw body still has everything.
    """

    object: str
    entry: list[UpdateEntry] = Field(default_factory=list)

    def statuses(self) -> list[tuple[str | None, StatusUpdate]]:
        """All statuses of ``field == "messages"`` changes, with their phone number id."""
        return [(pnid, s) for pnid, v in _values(self.entry, "messages") for s in v.statuses]

    def inbound_messages(self) -> list[tuple[str | None, InboundMessage]]:
        """All inbound user messages of ``field == "messages"`` changes."""
        return [(pnid, m) for pnid, v in _values(self.entry, "messages") for m in v.messages]

    def user_preferences(self) -> list[tuple[str | None, UserPreference]]:
        """All items of ``field == "user_preferences"`` changes."""
        changes = _values(self.entry, "user_preferences")
        return [(pnid, p) for pnid, v in changes for p in v.user_preferences]

    def contacts(self) -> list[ContactIds]:
        """Every ``value.contacts[]`` item, whatever the field."""
        return [c for entry in self.entry for ch in entry.changes for c in ch.value.contacts]


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
