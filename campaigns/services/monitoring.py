"""Monitoring use cases: what the dashboard and ``/metrics`` read from Postgres.

Counts only; Redis-side readings (rates, queues, limiter waits) live in
:mod:`campaigns.clients.telemetry` and the API's metrics module.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from campaigns.domain.outcomes import meaning_of
from campaigns.domain.refusals import NotFound
from campaigns.domain.states import ContactState
from campaigns.storage import monitoring as monitoring_db
from campaigns.storage.monitoring import Gauges

__all__ = ["ERROR_STATES", "ErrorCodeCount", "Gauges", "error_codes", "gauges"]

# States whose error_code says why the contact is where it is (a retried contact keeps the
# code of its last failure).
ERROR_STATES = (
    ContactState.ERROR,
    ContactState.SENDING_FAILED,
    ContactState.RETRY_SCHEDULED,
    ContactState.DELIVERY_FAILED,
)


@dataclass(frozen=True, slots=True)
class ErrorCodeCount:
    code: int
    meaning: str
    count: int


def require_campaign(engine: Engine, campaign_id: int) -> None:
    with engine.connect() as conn:
        if not monitoring_db.campaign_exists(conn, campaign_id):
            raise NotFound("campaign", campaign_id)


def error_codes(engine: Engine, campaign_id: int, limit: int = 10) -> list[ErrorCodeCount]:
    """The most frequent platform error codes of the campaign's contacts, with their meaning."""
    with engine.connect() as conn:
        if not monitoring_db.campaign_exists(conn, campaign_id):
            raise NotFound("campaign", campaign_id)
        rows = monitoring_db.error_code_counts(conn, campaign_id, ERROR_STATES, limit)
    return [ErrorCodeCount(code, meaning_of(code), count) for code, count in rows]


def gauges(engine: Engine, *, timeout_s: float = 5.0) -> Gauges:
    """Contacts by campaign and state, campaigns by status, auto-paused ones, upload rows.

    Every query of one scrape runs under a statement timeout of ``timeout_s``: a locked
    or overloaded database fails the scrape's Postgres part instead of piling up scrapes
    that each hold a pooled connection.
    """
    with engine.connect() as conn:
        monitoring_db.set_statement_timeout(conn, timeout_s)
        return monitoring_db.gauges(conn)
