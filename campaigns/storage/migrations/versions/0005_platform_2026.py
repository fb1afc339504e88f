"""The 2026 platform: senders known only by a user id, the user-id-to-phone map, named
template variables

- ``inbound_messages.from_wa_id`` becomes nullable and ``from_user_id`` is added: a user with a
  username may write with only a business-scoped user id. One of the two is always there.
- ``user_ids``: a business-scoped user id and the phone it belongs to, kept whenever a
  payload shows both (an opt-out known only by the user id reaches the phone through it).
- ``campaigns.named_variables``: the template's body uses named variables, so every body
  parameter is sent with its ``parameter_name``.

Revision ID: 0005_platform_2026
Revises: 0004_campaign_send_window
Create Date: 2026-12-10 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_platform_2026"
down_revision = "0004_campaign_send_window"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("inbound_messages", "from_wa_id", existing_type=sa.Text(), nullable=True)
    op.add_column("inbound_messages", sa.Column("from_user_id", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_inbound_messages_sender"),
        "inbound_messages",
        "from_wa_id IS NOT NULL OR from_user_id IS NOT NULL",
    )
    op.create_index(
        op.f("ix_inbound_messages_from_user_id"),
        "inbound_messages",
        ["from_user_id"],
        unique=False,
        postgresql_where=sa.text("from_user_id IS NOT NULL"),
    )
    op.create_table(
        "user_ids",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("phone_e164", sa.Text(), nullable=False),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_ids")),
    )
    op.create_index(op.f("ix_user_ids_phone_e164"), "user_ids", ["phone_e164"], unique=False)
    op.add_column(
        "campaigns",
        sa.Column("named_variables", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("campaigns", "named_variables")
    op.drop_index(op.f("ix_user_ids_phone_e164"), table_name="user_ids")
    op.drop_table("user_ids")
    op.drop_index(
        op.f("ix_inbound_messages_from_user_id"),
        table_name="inbound_messages",
        postgresql_where=sa.text("from_user_id IS NOT NULL"),
    )
    op.drop_constraint(op.f("ck_inbound_messages_sender"), "inbound_messages", type_="check")
    op.drop_column("inbound_messages", "from_user_id")
    # Rows of user-id-only senders cannot go back under NOT NULL: they are dropped.
    op.execute("DELETE FROM inbound_messages WHERE from_wa_id IS NULL")
    op.alter_column("inbound_messages", "from_wa_id", existing_type=sa.Text(), nullable=False)
