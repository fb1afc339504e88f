"""The send ledger: a durable start mark per attempt, and the platform's message status

- ``contacts.send_started_at``: set by the start statement (one per gate group, committed
  synchronously) right before the group's requests leave; cleared by every claim. Lease
  recovery decides from it alone: an expired lease without it was never sent.
- ``contacts.message_status``: the send answer's ``message_status`` (``accepted``,
  ``held_for_quality_assessment``, ``paused``), counted in the campaign's output.

Revision ID: 0008_send_ledger
Revises: 0007_profiles
Create Date: 2026-12-12 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_send_ledger"
down_revision = "0007_profiles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "contacts", sa.Column("send_started_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("contacts", sa.Column("message_status", sa.Text(), nullable=True))
    # Claims made before this revision have no start mark: they were sent under the Redis
    # markers, so they count as started (recovery waits for their webhook, never releases).
    op.execute("UPDATE contacts SET send_started_at = in_progress_at WHERE state = 'in_progress'")


def downgrade() -> None:
    op.drop_column("contacts", "message_status")
    op.drop_column("contacts", "send_started_at")
