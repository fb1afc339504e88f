"""What operators see of the webhook path: nothing is dropped silently."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Engine, RowMapping

from campaigns.storage import webhook_report as report_db


class DeliveryFailure(BaseModel):
    campaign_id: int
    error_code: int | None
    contacts: int
    example_detail: str | None


class UnmatchedStatus(BaseModel):
    id: int
    inbox_id: int
    wamid: str
    attempt_id: uuid.UUID | None
    status: str
    status_at: datetime
    recipient_id: str | None
    tries: int
    first_seen_at: datetime
    given_up_at: datetime | None


class RejectedWebhook(BaseModel):
    id: int
    received_at: datetime
    reason: str | None
    size_bytes: int


class WebhookReport(BaseModel):
    """What operators need to see of the webhook path: nothing is dropped silently."""

    inbox: dict[str, int]
    oldest_pending_s: float | None
    status_retries: dict[str, int]
    unmatched: list[UnmatchedStatus]
    rejected: list[RejectedWebhook]
    delivery_failures: list[DeliveryFailure]


def webhook_report(
    engine: Engine, *, campaign_id: int | None = None, limit: int = 50
) -> WebhookReport:
    with engine.connect() as conn:
        counts = report_db.inbox_counts(conn)
        retries = report_db.retry_counts(conn)
        return WebhookReport(
            inbox={s: counts.get(s, 0) for s in ("pending", "applied", "rejected", "unmatched")},
            oldest_pending_s=report_db.oldest_pending_age_s(conn),
            status_retries={s: retries.get(s, 0) for s in ("waiting", "applied", "unmatched")},
            unmatched=[
                UnmatchedStatus(
                    id=r["id"],
                    inbox_id=r["inbox_id"],
                    wamid=r["wamid"],
                    attempt_id=r["attempt_id"],
                    status=r["status"],
                    status_at=r["status_at"],
                    recipient_id=r["recipient_id"],
                    tries=r["tries"],
                    first_seen_at=r["created_at"],
                    given_up_at=r["finished_at"],
                )
                for r in report_db.list_unmatched(conn, limit)
            ],
            rejected=[RejectedWebhook(**dict(r)) for r in report_db.list_rejected(conn, limit)],
            delivery_failures=_failures(report_db.delivery_failures(conn, campaign_id)),
        )


def _failures(rows: Iterable[RowMapping]) -> list[DeliveryFailure]:
    return [DeliveryFailure(**dict(r)) for r in rows]
