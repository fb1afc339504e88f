"""webhook inbox, status retries, inbound messages

Revision ID: 0002_webhook_inbox
Revises: 0001
Create Date: 2026-11-23 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_webhook_inbox"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_inbox",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("statuses", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tries", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_try_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'applied', 'rejected', 'unmatched')",
            name=op.f("ck_webhook_inbox_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_inbox")),
    )
    op.create_index(
        "ix_webhook_inbox_pending_due",
        "webhook_inbox",
        ["next_try_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "webhook_status_retries",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("inbox_id", sa.BigInteger(), nullable=False),
        sa.Column("wamid", sa.Text(), nullable=False),
        sa.Column("attempt_id", sa.UUID(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recipient_id", sa.Text(), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), server_default="waiting", nullable=False),
        sa.Column("tries", sa.Integer(), server_default="1", nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('waiting', 'applied', 'unmatched')",
            name=op.f("ck_webhook_status_retries_state"),
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["webhook_inbox.id"],
            name=op.f("fk_webhook_status_retries_inbox_id_webhook_inbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_status_retries")),
    )
    op.create_index(
        op.f("ix_webhook_status_retries_inbox_id"),
        "webhook_status_retries",
        ["inbox_id"],
        unique=False,
    )
    op.create_index(
        "ix_webhook_status_retries_due",
        "webhook_status_retries",
        ["next_try_at", "id"],
        unique=False,
        postgresql_where=sa.text("state = 'waiting'"),
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("inbox_id", sa.BigInteger(), nullable=True),
        sa.Column("wamid", sa.Text(), nullable=False),
        sa.Column("from_wa_id", sa.Text(), nullable=False),
        sa.Column("phone_number_id", sa.Text(), nullable=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["webhook_inbox.id"],
            name=op.f("fk_inbound_messages_inbox_id_webhook_inbox"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        sa.UniqueConstraint("wamid", name=op.f("uq_inbound_messages_wamid")),
    )
    op.create_index(
        op.f("ix_inbound_messages_from_wa_id"), "inbound_messages", ["from_wa_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_inbound_messages_from_wa_id"), table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_index(
        "ix_webhook_status_retries_due",
        table_name="webhook_status_retries",
        postgresql_where=sa.text("state = 'waiting'"),
    )
    op.drop_index(op.f("ix_webhook_status_retries_inbox_id"), table_name="webhook_status_retries")
    op.drop_table("webhook_status_retries")
    op.drop_index(
        "ix_webhook_inbox_pending_due",
        table_name="webhook_inbox",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("webhook_inbox")
