"""The claim's order in its index: ``ix_contacts_due`` gains ``id``

The claim takes due contacts ``ORDER BY next_attempt_at, id``. With the index on
``(campaign_id, next_attempt_at)`` only, every contact of one upload chunk (one transaction:
one ``now()``) ties on ``next_attempt_at``, so each claim read and sorted all of a
campaign's due contacts to return ~500 (60 ms and more per claim at 60,000 contacts: a seq
scan and an external merge sort in EXPLAIN). With ``id`` in the index the scan returns rows in
the claim's order and stops at its LIMIT (0.5 ms).

The index is rebuilt inside the migration's transaction: writes to ``contacts`` wait while it
builds (seconds per million contacts). On a very large table, build
``ix_contacts_due_v2`` with ``CREATE INDEX CONCURRENTLY`` first; this revision then swaps it in
at once.

Revision ID: 0009_claim_order_index
Revises: 0008_send_ledger
Create Date: 2026-12-03 18:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0009_claim_order_index"
down_revision = "0008_send_ledger"
branch_labels = None
depends_on = None

_DUE = "state IN ('initial', 'retry_scheduled')"


def upgrade() -> None:
    op.execute(
        f"CREATE INDEX IF NOT EXISTS ix_contacts_due_v2 ON contacts "
        f"(campaign_id, next_attempt_at, id) WHERE {_DUE}"
    )
    op.execute("DROP INDEX ix_contacts_due")
    op.execute("ALTER INDEX ix_contacts_due_v2 RENAME TO ix_contacts_due")


def downgrade() -> None:
    op.execute("DROP INDEX ix_contacts_due")
    op.execute(
        f"CREATE INDEX ix_contacts_due ON contacts (campaign_id, next_attempt_at) WHERE {_DUE}"
    )
