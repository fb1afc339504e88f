"""Retention of the webhook inbox: applied bodies go after WEBHOOK_INBOX_RETENTION_H; rejected
and unmatched ones stay for operators."""

from __future__ import annotations

import time

from sqlalchemy import Engine

from campaigns.storage import webhooks as webhooks_db


def prune_inbox(
    engine: Engine, *, retention_s: float, batch: int = 10_000, budget_s: float = 5.0
) -> int:
    """Deletes applied inbox bodies past retention, a batch per transaction; returns how many."""
    deadline = time.monotonic() + budget_s
    total = 0
    while True:
        with engine.begin() as conn:
            deleted = webhooks_db.prune_applied(conn, older_than_s=retention_s, limit=batch)
        total += deleted
        if deleted < batch or time.monotonic() >= deadline:
            return total
