"""Contact profiles with versioned typed schemas (seed 004)

- ``profile_schemas``: one row per posted schema, never changed; ``id`` orders them (the
  newest is the one profile writes are checked against), ``uuid`` names them.
- ``profiles``: one row per person with a profile: the document of its own fields, the uuid
  of the schema it was written under and its ``generation`` (every write adds 1). No foreign
  key to ``people``: uploads upsert a chunk's profiles in one statement, and a trigger per
  row would cost more than the rest of it (people are never deleted, only marked removed,
  and a removal deletes the profile in the same transaction).
- ``people.whatsapp_profile_name``: the ``contacts[].profile.name`` of inbound messages.

Revision ID: 0007_profiles
Revises: 0006_registry
Create Date: 2026-12-16 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_profiles"
down_revision = "0006_registry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_schemas",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("uuid", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("fields", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_schemas")),
        sa.UniqueConstraint("uuid", name=op.f("uq_profile_schemas_uuid")),
    )
    op.create_table(
        "profiles",
        sa.Column("person_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("schema_uuid", postgresql.UUID(as_uuid=False), nullable=True),
        sa.Column("generation", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "fields", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("jsonb_typeof(fields) = 'object'", name=op.f("ck_profiles_object")),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_profiles")),
    )
    op.add_column("people", sa.Column("whatsapp_profile_name", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("people", "whatsapp_profile_name")
    op.drop_table("profiles")
    op.drop_table("profile_schemas")
