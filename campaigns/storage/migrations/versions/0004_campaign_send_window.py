"""campaigns: an optional daily send window in the recipient's local time

Three nullable columns, all set or none: the window's start and end (local wall-clock TIME;
end before start wraps midnight) and the fallback zone (IANA name) for numbers whose own
zones do not settle it. NULL everywhere is today's behaviour: no window.

Revision ID: 0004_campaign_send_window
Revises: 0003_contacts_upload_fk
Create Date: 2026-11-23 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_campaign_send_window"
down_revision = "0003_contacts_upload_fk"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("send_window_start", sa.Time(), nullable=True))
    op.add_column("campaigns", sa.Column("send_window_end", sa.Time(), nullable=True))
    op.add_column("campaigns", sa.Column("send_window_tz", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_campaigns_send_window"),
        "campaigns",
        "(send_window_start IS NULL AND send_window_end IS NULL AND send_window_tz IS NULL) OR "
        "(send_window_start IS NOT NULL AND send_window_end IS NOT NULL "
        "AND send_window_tz IS NOT NULL AND send_window_start <> send_window_end)",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_campaigns_send_window"), "campaigns", type_="check")
    op.drop_column("campaigns", "send_window_tz")
    op.drop_column("campaigns", "send_window_end")
    op.drop_column("campaigns", "send_window_start")
