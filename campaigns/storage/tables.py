"""Typed table definitions (SQLAlchemy 2). The schema itself is made only by Alembic."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Time,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from campaigns.domain.states import CampaignStatus, ContactState


def _check_in(column: str, values: type[Any]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


# A window has a start, an end and a fallback zone, or none of them; an empty one is refused.
SEND_WINDOW_CHECK = (
    "(send_window_start IS NULL AND send_window_end IS NULL AND send_window_tz IS NULL) OR "
    "(send_window_start IS NOT NULL AND send_window_end IS NOT NULL "
    "AND send_window_tz IS NOT NULL AND send_window_start <> send_window_end)"
)

UPLOAD_STATUSES = ("received", "processing", "completed", "failed", "refused")


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(_check_in("status", CampaignStatus), name="status"),
        CheckConstraint(SEND_WINDOW_CHECK, name="send_window"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    template_name: Mapped[str | None] = mapped_column(Text)
    template_language: Mapped[str] = mapped_column(Text, server_default="en")
    # Column names whose values fill the template body parameters, in order.
    body_variables: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # The template's body uses named variables: each parameter carries its parameter_name.
    named_variables: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # The registry: refuse people without an opt-in; check every valid contact before the
    # first send (contacts_checked_at: that check is done).
    require_opt_in: Mapped[bool] = mapped_column(Boolean, server_default=false())
    check_contacts: Mapped[bool] = mapped_column(Boolean, server_default=false())
    contacts_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    default_region: Mapped[str] = mapped_column(String(2))
    phone_number_id: Mapped[str | None] = mapped_column(Text)
    rate_per_s: Mapped[Decimal] = mapped_column(Numeric(8, 2), server_default="80")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="5")
    # Daily send window in the recipient's local time (campaigns/send_window.py); all three
    # or none. ``send_window_tz`` decides for numbers whose own zones do not.
    send_window_start: Mapped[time | None] = mapped_column(Time)
    send_window_end: Mapped[time | None] = mapped_column(Time)
    send_window_tz: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=CampaignStatus.DRAFT.value)
    status_reason: Mapped[str | None] = mapped_column(Text)
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Upload(Base):
    __tablename__ = "uploads"
    __table_args__ = (
        CheckConstraint(
            f"status IN ({', '.join(repr(s) for s in UPLOAD_STATUSES)})", name="status"
        ),
        # The target of contacts' (upload_id, campaign_id) foreign key.
        UniqueConstraint("id", "campaign_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(Text)
    spool_path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(Text, server_default="received")
    phone_column: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(String(2))
    encoding: Mapped[str | None] = mapped_column(Text)
    delimiter: Mapped[str | None] = mapped_column(Text)
    columns: Mapped[list[str] | None] = mapped_column(JSONB)
    rows_read: Mapped[int] = mapped_column(BigInteger, server_default="0")
    valid_rows: Mapped[int] = mapped_column(BigInteger, server_default="0")
    invalid_rows: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Last data line committed: an interrupted upload resumes after it.
    last_line: Mapped[int] = mapped_column(BigInteger, server_default="0")
    reasons: Mapped[dict[str, int]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        CheckConstraint(_check_in("state", ContactState), name="state"),
        UniqueConstraint("upload_id", "line_no"),
        # One key, one RI trigger per COPYed row: the upload implies the campaign (uploads
        # references campaigns), and a contact's campaign must be its upload's.
        ForeignKeyConstraint(
            ["upload_id", "campaign_id"],
            ["uploads.id", "uploads.campaign_id"],
            ondelete="CASCADE",
        ),
        # Due work of a campaign: the claim query walks this index in its order (migration
        # 0009: without ``id`` a chunk's contacts tie and every claim sorted them all).
        Index(
            "ix_contacts_due",
            "campaign_id",
            "next_attempt_at",
            "id",
            postgresql_where=text("state IN ('initial', 'retry_scheduled')"),
        ),
        Index("ix_contacts_campaign_state", "campaign_id", "state"),
        # One live contact per phone and campaign; duplicates are stored as invalid records.
        Index(
            "uq_contacts_campaign_phone",
            "campaign_id",
            "phone_e164",
            unique=True,
            postgresql_where=text("state <> 'invalid_record'"),
        ),
        # Partial: a fresh upload's rows have neither, and indexing their NULLs costs ingest time.
        Index(
            "uq_contacts_attempt_id",
            "attempt_id",
            unique=True,
            postgresql_where=text("attempt_id IS NOT NULL"),
        ),
        Index(
            "uq_contacts_wamid", "wamid", unique=True, postgresql_where=text("wamid IS NOT NULL")
        ),
        Index(
            "ix_contacts_lease",
            "lease_expires_at",
            postgresql_where=text("state = 'in_progress'"),
        ),
        # The campaigns a person is in (registry lookup, the contacts check's deliveries).
        Index(
            "ix_contacts_person_id",
            "person_id",
            postgresql_where=text("person_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigInteger)
    upload_id: Mapped[int] = mapped_column(BigInteger)
    line_no: Mapped[int] = mapped_column(Integer)
    phone_raw: Mapped[str] = mapped_column(Text)
    phone_e164: Mapped[str | None] = mapped_column(Text)
    # The person (people.id, the number's digits); no foreign key: see Person.
    person_id: Mapped[int | None] = mapped_column(BigInteger)
    wa_id: Mapped[str | None] = mapped_column(Text)
    variables: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    state: Mapped[str] = mapped_column(Text, server_default=ContactState.INITIAL.value)
    reason_code: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempt_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    wamid: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_detail: Mapped[str | None] = mapped_column(Text)
    in_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The durable start mark of the current attempt: its requests may have left (the send
    # ledger; NULL: provably never sent). Cleared by every claim.
    send_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The send answer's message_status (accepted, held_for_quality_assessment, paused).
    message_status: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ContactEvent(Base):
    """Append-only log of every contact transition."""

    __tablename__ = "contact_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigInteger, index=True)
    campaign_id: Mapped[int] = mapped_column(BigInteger)
    from_state: Mapped[str | None] = mapped_column(Text)
    to_state: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    source: Mapped[str] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)


class CampaignEvent(Base):
    """Append-only log of campaign status changes and admin commands."""

    __tablename__ = "campaign_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigInteger, index=True)
    from_status: Mapped[str | None] = mapped_column(Text)
    to_status: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    source: Mapped[str] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)


PERSON_STATUS = (
    "CASE WHEN blocked_at IS NOT NULL THEN 'BLOCKED' "
    "WHEN unavailable_since IS NOT NULL THEN 'UNAVAILABLE' END"
)


class Person(Base):
    """The contact registry: one record per person across every campaign
    (:mod:`campaigns.domain.registry` holds its rules, :mod:`campaigns.storage.registry` its SQL).

    ``id`` is the E.164 number's digits, so a number's id is known without asking (uploads
    write ``contacts.person_id`` in their COPY rows); a person known only by a
    business-scoped user id (an opt-out from a user with a username) has a negative id from
    ``people_user_seq``. A removed person keeps its row (``removed_at``, everything but an
    opt-out erased), so the campaign contacts linked to it stay linked.
    """

    __tablename__ = "people"
    __table_args__ = (
        CheckConstraint("phone_e164 IS NOT NULL OR user_id IS NOT NULL", name="key"),
        CheckConstraint(
            "check_status IS NULL OR check_status IN ('valid', 'invalid', 'failed')",
            name="check_status",
        ),
        Index(
            "uq_people_user_id",
            "user_id",
            unique=True,
            postgresql_where=text("user_id IS NOT NULL"),
        ),
        Index("ix_people_wa_id", "wa_id", postgresql_where=text("wa_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    phone_e164: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(Text)
    wa_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(Text, Computed(PERSON_STATUS, persisted=True))
    unavailable_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unavailable_code: Mapped[int | None] = mapped_column(Integer)
    blocked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    blocked_reason: Mapped[str | None] = mapped_column(Text)
    opted_in: Mapped[bool] = mapped_column(Boolean, server_default=false())
    opted_in_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    opt_in_source: Mapped[str | None] = mapped_column(Text)
    opted_out: Mapped[bool] = mapped_column(Boolean, server_default=false())
    opted_out_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    opt_out_source: Mapped[str | None] = mapped_column(Text)
    check_status: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The contacts[].profile.name of the person's inbound messages (the profile's
    # whatsapp_profile_name).
    whatsapp_profile_name: Mapped[str | None] = mapped_column(Text)


class ProfileSchemaRow(Base):
    """A posted profile schema (seed 004), never changed; ``id`` orders them, newest last."""

    __tablename__ = "profile_schemas"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    uuid: Mapped[str] = mapped_column(UUID(as_uuid=False), unique=True)
    version: Mapped[str] = mapped_column(Text)
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProfileRow(Base):
    """A person's profile: its own fields' values, the schema it was written under and its
    generation (every write adds 1). A person without a row has the defaults at 0."""

    __tablename__ = "profiles"
    __table_args__ = (CheckConstraint("jsonb_typeof(fields) = 'object'", name="object"),)

    person_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    schema_uuid: Mapped[str | None] = mapped_column(UUID(as_uuid=False))
    generation: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UserId(Base):
    """A business-scoped user id and its phone, kept whenever a payload shows both.

    An opt-out known only by a user id (a ``people`` row with that ``user_id``) reaches the
    phone's person through this map once it is known.
    """

    __tablename__ = "user_ids"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    phone_e164: Mapped[str] = mapped_column(Text, index=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    # sha256 of the token: a leaked table does not leak usable tokens.
    token_sha256: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


campaigns_t = cast(Table, Campaign.__table__)
uploads_t = cast(Table, Upload.__table__)
contacts_t = cast(Table, Contact.__table__)
contact_events_t = cast(Table, ContactEvent.__table__)
campaign_events_t = cast(Table, CampaignEvent.__table__)
people_t = cast(Table, Person.__table__)
user_ids_t = cast(Table, UserId.__table__)
api_tokens_t = cast(Table, ApiToken.__table__)
profile_schemas_t = cast(Table, ProfileSchemaRow.__table__)
profiles_t = cast(Table, ProfileRow.__table__)


# --------------------------------------------------------------------------- webhooks

INBOX_STATUSES = ("pending", "applied", "rejected", "unmatched")
RETRY_STATES = ("waiting", "applied", "unmatched")


class WebhookInbox(Base):
    """Every signed webhook POST, stored raw before it is answered 200.

    ``unmatched``: applied, but at least one of its statuses matched no contact within the
    retry bound (see ``webhook_status_retries``); ``rejected``: not a webhook body we can read.
    """

    __tablename__ = "webhook_inbox"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in INBOX_STATUSES)})", name="status"),
        # The applier's claim walks only what is due.
        Index(
            "ix_webhook_inbox_pending_due",
            "next_try_at",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    statuses: Mapped[int] = mapped_column(Integer, server_default="0")
    tries: Mapped[int] = mapped_column(Integer, server_default="0")
    next_try_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookStatusRetry(Base):
    """A status that matched no contact when its body was applied: retried on its own.

    It waits with backoff (the worker's commit of the wamid may be a moment behind), and
    after the bound becomes ``unmatched``: kept and counted for operators, never dropped.
    """

    __tablename__ = "webhook_status_retries"
    __table_args__ = (
        CheckConstraint(f"state IN ({', '.join(repr(s) for s in RETRY_STATES)})", name="state"),
        Index(
            "ix_webhook_status_retries_due",
            "next_try_at",
            "id",
            postgresql_where=text("state = 'waiting'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    inbox_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_inbox.id", ondelete="CASCADE"), index=True
    )
    wamid: Mapped[str] = mapped_column(Text)
    attempt_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    status: Mapped[str] = mapped_column(Text)
    status_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recipient_id: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_detail: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, server_default="waiting")
    tries: Mapped[int] = mapped_column(Integer, server_default="1")
    next_try_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class InboundMessageRow(Base):
    """A message a person sent to the business (e.g. a STOP reply)."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        # A user with a username may write with only a business-scoped user id.
        CheckConstraint("from_wa_id IS NOT NULL OR from_user_id IS NOT NULL", name="sender"),
        Index(
            "ix_inbound_messages_from_user_id",
            "from_user_id",
            postgresql_where=text("from_user_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    inbox_id: Mapped[int | None] = mapped_column(
        ForeignKey("webhook_inbox.id", ondelete="SET NULL")
    )
    wamid: Mapped[str] = mapped_column(Text, unique=True)
    from_wa_id: Mapped[str | None] = mapped_column(Text, index=True)
    from_user_id: Mapped[str | None] = mapped_column(Text)
    phone_number_id: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


webhook_inbox_t = cast(Table, WebhookInbox.__table__)
webhook_status_retries_t = cast(Table, WebhookStatusRetry.__table__)
inbound_messages_t = cast(Table, InboundMessageRow.__table__)
