"""contacts: one composite foreign key to uploads instead of one each to campaigns and uploads

Every row COPYed into contacts fires one RI trigger per foreign key. The campaign is already
implied by the upload (uploads.campaign_id references campaigns), so a single key
(upload_id, campaign_id) -> uploads (id, campaign_id) keeps every guarantee, adds one (a
contact's campaign is its upload's campaign), and halves the trigger work of an upload.
Deleting a campaign still cascades: campaigns -> uploads -> contacts.

Revision ID: 0003_contacts_upload_fk
Revises: 0002_webhook_inbox
Create Date: 2026-11-23 13:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0003_contacts_upload_fk"
down_revision = "0002_webhook_inbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_unique_constraint("uq_uploads_id_campaign_id", "uploads", ["id", "campaign_id"])
    op.drop_constraint("fk_contacts_upload_id_uploads", "contacts", type_="foreignkey")
    op.drop_constraint("fk_contacts_campaign_id_campaigns", "contacts", type_="foreignkey")
    op.create_foreign_key(
        "fk_contacts_upload_id_uploads",
        "contacts",
        "uploads",
        ["upload_id", "campaign_id"],
        ["id", "campaign_id"],
        ondelete="CASCADE",
    )


def downgrade() -> None:
    op.drop_constraint("fk_contacts_upload_id_uploads", "contacts", type_="foreignkey")
    op.create_foreign_key(
        "fk_contacts_upload_id_uploads",
        "contacts",
        "uploads",
        ["upload_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_foreign_key(
        "fk_contacts_campaign_id_campaigns",
        "contacts",
        "campaigns",
        ["campaign_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.drop_constraint("uq_uploads_id_campaign_id", "uploads", type_="unique")
