"""The contact registry: one record per person across campaigns

- ``people``: one row per E.164 number (``id`` = its digits, so the same number always has
  the same id) or, for an opt-out known only by a business-scoped user id, per user id
  (negative ids from ``people_user_seq``). ``status`` is generated: BLOCKED while
  ``blocked_at`` is set, else UNAVAILABLE once ``unavailable_since`` is.
- ``contacts.person_id``: every campaign contact with a number links to its person
  (backfilled here; uploads write it in their COPY rows). No foreign key: that would cost a
  trigger per COPYed row, and a removed person keeps its row (``removed_at``) anyway.
- ``opt_outs`` moves into ``people``: a phone's opt-out (and its source and time) becomes
  the person's; a ``user:<id>`` row becomes a person known by that user id. Nothing is lost,
  and the downgrade writes them back.
- ``campaigns.require_opt_in`` / ``check_contacts`` / ``contacts_checked_at``.

Revision ID: 0006_registry
Revises: 0005_platform_2026
Create Date: 2026-12-14 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_registry"
down_revision = "0005_platform_2026"
branch_labels = None
depends_on = None

STATUS = (
    "CASE WHEN blocked_at IS NOT NULL THEN 'BLOCKED' "
    "WHEN unavailable_since IS NOT NULL THEN 'UNAVAILABLE' END"
)
E164 = r"'^\+[1-9][0-9]{5,14}$'"


def _ts(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    _create_people()
    op.add_column("contacts", sa.Column("person_id", sa.BigInteger(), nullable=True))
    _move_people()
    op.create_index(
        "ix_contacts_person_id",
        "contacts",
        ["person_id"],
        postgresql_where=sa.text("person_id IS NOT NULL"),
    )
    op.drop_table("opt_outs")
    op.add_column(
        "campaigns",
        sa.Column("require_opt_in", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "campaigns",
        sa.Column("check_contacts", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("campaigns", _ts("contacts_checked_at"))


def _create_people() -> None:
    op.execute("CREATE SEQUENCE people_user_seq")
    op.create_table(
        "people",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("phone_e164", sa.Text(), nullable=True),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("wa_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), sa.Computed(STATUS, persisted=True), nullable=True),
        _ts("unavailable_since"),
        sa.Column("unavailable_code", sa.Integer(), nullable=True),
        _ts("blocked_at"),
        sa.Column("blocked_reason", sa.Text(), nullable=True),
        sa.Column("opted_in", sa.Boolean(), server_default=sa.false(), nullable=False),
        _ts("opted_in_at"),
        sa.Column("opt_in_source", sa.Text(), nullable=True),
        sa.Column("opted_out", sa.Boolean(), server_default=sa.false(), nullable=False),
        _ts("opted_out_at"),
        sa.Column("opt_out_source", sa.Text(), nullable=True),
        sa.Column("check_status", sa.Text(), nullable=True),
        _ts("checked_at"),
        sa.Column(
            "first_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        _ts("last_sent_at"),
        _ts("removed_at"),
        sa.CheckConstraint(
            "phone_e164 IS NOT NULL OR user_id IS NOT NULL", name=op.f("ck_people_key")
        ),
        sa.CheckConstraint(
            "check_status IS NULL OR check_status IN ('valid', 'invalid', 'failed')",
            name=op.f("ck_people_check_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_people")),
    )
    op.create_index(
        "uq_people_user_id",
        "people",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_index(
        "ix_people_wa_id", "people", ["wa_id"], postgresql_where=sa.text("wa_id IS NOT NULL")
    )


def _move_people() -> None:
    """Every number of a contact becomes a person, then every opt-out moves in."""
    op.execute(
        f"""
        INSERT INTO people (id, phone_e164, first_seen_at)
        SELECT CAST(substr(phone_e164, 2) AS bigint), phone_e164, min(created_at)
        FROM contacts WHERE phone_e164 ~ {E164}
        GROUP BY phone_e164
        """
    )
    op.execute(
        f"UPDATE contacts SET person_id = CAST(substr(phone_e164, 2) AS bigint) "
        f"WHERE phone_e164 ~ {E164}"
    )
    op.execute(
        f"""
        INSERT INTO people (id, phone_e164, opted_out, opted_out_at, opt_out_source,
                            first_seen_at)
        SELECT CAST(substr(phone_e164, 2) AS bigint), phone_e164, true, created_at, source,
               created_at
        FROM opt_outs WHERE phone_e164 ~ {E164}
        ON CONFLICT (id) DO UPDATE SET
            opted_out = true, opted_out_at = EXCLUDED.opted_out_at,
            opt_out_source = EXCLUDED.opt_out_source
        """
    )
    op.execute(
        """
        INSERT INTO people (id, user_id, opted_out, opted_out_at, opt_out_source, first_seen_at)
        SELECT -nextval('people_user_seq'), substr(phone_e164, 6), true, created_at, source,
               created_at
        FROM opt_outs WHERE phone_e164 LIKE 'user:%'
        """
    )
    # Anything else (never written by the project) is kept as it was, against its key.
    op.execute(
        f"""
        INSERT INTO people (id, user_id, opted_out, opted_out_at, opt_out_source, first_seen_at)
        SELECT -nextval('people_user_seq'), 'legacy:' || phone_e164, true, created_at, source,
               created_at
        FROM opt_outs WHERE phone_e164 !~ {E164} AND phone_e164 NOT LIKE 'user:%'
        """
    )


def downgrade() -> None:
    op.drop_column("campaigns", "contacts_checked_at")
    op.drop_column("campaigns", "check_contacts")
    op.drop_column("campaigns", "require_opt_in")
    op.create_table(
        "opt_outs",
        sa.Column("phone_e164", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("phone_e164", name=op.f("pk_opt_outs")),
    )
    # Opt-outs go back; what opt_outs cannot hold (status, opt-ins, checks) is dropped.
    op.execute(
        """
        INSERT INTO opt_outs (phone_e164, source, created_at)
        SELECT CASE
                   WHEN phone_e164 IS NOT NULL THEN phone_e164
                   WHEN user_id LIKE 'legacy:%' THEN substr(user_id, 8)
                   ELSE 'user:' || user_id
               END,
               coalesce(opt_out_source, 'operator'), coalesce(opted_out_at, now())
        FROM people WHERE opted_out
        ON CONFLICT DO NOTHING
        """
    )
    op.drop_index("ix_contacts_person_id", table_name="contacts")
    op.drop_column("contacts", "person_id")
    op.drop_index("ix_people_wa_id", table_name="people")
    op.drop_index("uq_people_user_id", table_name="people")
    op.drop_table("people")
    op.execute("DROP SEQUENCE people_user_seq")
