"""What operators read of the webhook path: inbox counts, unmatched and rejected bodies,
delivery failures."""

from __future__ import annotations

from sqlalchemy import Connection, RowMapping, text


def inbox_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(text("SELECT status, count(*) AS n FROM webhook_inbox GROUP BY status"))
    return {str(r.status): int(r.n) for r in rows}


def oldest_pending_age_s(conn: Connection) -> float | None:
    age = conn.execute(
        text(
            "SELECT extract(epoch FROM now() - min(received_at)) FROM webhook_inbox "
            "WHERE status = 'pending'"
        )
    ).scalar_one()
    return None if age is None else float(age)


def retry_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        text("SELECT state, count(*) AS n FROM webhook_status_retries GROUP BY state")
    )
    return {str(r.state): int(r.n) for r in rows}


def list_unmatched(conn: Connection, limit: int) -> list[RowMapping]:
    rows = conn.execute(
        text(
            """
            SELECT id, inbox_id, wamid, attempt_id, status, status_at, recipient_id, tries,
                   created_at, finished_at
            FROM webhook_status_retries WHERE state = 'unmatched'
            ORDER BY id DESC LIMIT :limit
            """
        ),
        {"limit": limit},
    )
    return list(rows.mappings())


def list_rejected(conn: Connection, limit: int) -> list[RowMapping]:
    rows = conn.execute(
        text(
            """
            SELECT id, received_at, reason, length(body) AS size_bytes
            FROM webhook_inbox WHERE status = 'rejected'
            ORDER BY id DESC LIMIT :limit
            """
        ),
        {"limit": limit},
    )
    return list(rows.mappings())


def delivery_failures(conn: Connection, campaign_id: int | None = None) -> list[RowMapping]:
    """Delivery failed contacts per campaign and error code, most frequent first."""
    rows = conn.execute(
        text(
            """
            SELECT campaign_id, error_code, count(*) AS contacts,
                   min(error_detail) AS example_detail
            FROM contacts
            WHERE state = 'delivery_failed'
              AND (CAST(:campaign_id AS bigint) IS NULL OR campaign_id = :campaign_id)
            GROUP BY campaign_id, error_code
            ORDER BY campaign_id, count(*) DESC, error_code
            """
        ),
        {"campaign_id": campaign_id},
    )
    return list(rows.mappings())
