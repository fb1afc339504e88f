"""Alembic environment: the URL comes from the caller (campaigns.storage.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from campaigns.storage.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "campaigns.storage.migrate sets sqlalchemy.url"

connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        # Two processes migrating at once (API and worker starting together) take turns.
        context.execute("SELECT pg_advisory_xact_lock(727001)")
        context.run_migrations()
