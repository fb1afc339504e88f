"""SQL of a retry: one statement moves a campaign's matching failed contacts back to Retry
scheduled (due now) and appends their events; it never commits.

The verdict of each contact is :func:`campaigns.domain.retry.verdict` in SQL: the registry's
refusal (``storage.registry.refusal_code``, without the opt-in rule), then outcome unknown.
"""

from __future__ import annotations

from sqlalchemy import Connection, insert, text

from campaigns.domain.retry import (
    OUTCOME_UNKNOWN_PREFIX,
    RETRY_DETAIL,
    RetryFilter,
    Verdict,
)
from campaigns.domain.states import CampaignStatus, ContactState, contact_sources
from campaigns.storage.registry import refusal_code
from campaigns.storage.sql import in_list
from campaigns.storage.tables import campaign_events_t

C = ContactState

_UNKNOWN = f"(c.state = '{C.ERROR.value}' AND c.reason LIKE '{OUTCOME_UNKNOWN_PREFIX}%')"

# The contacts are locked in id order (as every set-based writer of contacts does); the
# campaign row is locked by the caller first. ix_contacts_campaign_state serves the scan.
_RETRY = f"""
WITH m AS (
    SELECT c.id, c.state, c.attempts, c.reason, c.error_code,
           {_UNKNOWN} AS unknown,
           coalesce(
               {refusal_code("false")},
               CASE WHEN {_UNKNOWN} AND NOT :include_unknown
                    THEN '{Verdict.OUTCOME_UNKNOWN.value}' END,
               '{Verdict.QUEUED.value}'
           ) AS verdict
    FROM contacts c LEFT JOIN people p ON p.id = c.person_id
    WHERE c.campaign_id = :cid
      AND c.state = ANY(CAST(:states AS text[]))
      AND c.state IN ({in_list(contact_sources(C.RETRY_SCHEDULED))})
      AND (cardinality(CAST(:reason_codes AS text[])) = 0
           OR c.reason_code = ANY(CAST(:reason_codes AS text[])))
      AND (cardinality(CAST(:error_codes AS integer[])) = 0
           OR c.error_code = ANY(CAST(:error_codes AS integer[])))
    ORDER BY c.id
    FOR UPDATE OF c
), moved AS (
    UPDATE contacts c SET
        state = '{C.RETRY_SCHEDULED.value}', attempts = 0, next_attempt_at = now(),
        reason = :detail, reason_code = NULL, error_code = NULL, error_detail = NULL,
        lease_expires_at = NULL, finished_at = NULL, updated_at = now()
    FROM m
    WHERE c.id = m.id AND m.verdict = '{Verdict.QUEUED.value}'
    RETURNING c.id, c.campaign_id, m.state AS from_state, m.attempts, m.reason, m.error_code
), events AS (
    INSERT INTO contact_events (contact_id, campaign_id, from_state, to_state, source, detail)
    SELECT id, campaign_id, from_state, '{C.RETRY_SCHEDULED.value}', 'admin',
           :detail || ' after ' || attempts || ' attempt(s)'
           || coalesce(' (' || error_code || ')', '') || coalesce(': ' || reason, '')
    FROM moved ORDER BY id
)
SELECT state, verdict, unknown, count(*) AS n FROM m GROUP BY state, verdict, unknown
"""


def requeue_failed(
    conn: Connection, campaign_id: int, rule: RetryFilter
) -> list[tuple[ContactState, Verdict, bool, int]]:
    """Matching contacts -> Retry scheduled (attempts 0, due now), with their events;
    ``(state, verdict, outcome unknown, count)`` of every contact the filter matched."""
    rows = conn.execute(
        text(_RETRY),
        {
            "cid": campaign_id,
            "states": sorted(s.value for s in rule.states),
            "reason_codes": sorted(rule.reason_codes),
            "error_codes": sorted(rule.error_codes),
            "include_unknown": rule.include_unknown,
            "detail": RETRY_DETAIL,
        },
    )
    return [(ContactState(s), Verdict(v), bool(u), int(n)) for s, v, u, n in rows]


def log_retry(conn: Connection, campaign_id: int, status: CampaignStatus, *, detail: str) -> None:
    """The campaign's event of a retry that left its status as it was (running)."""
    conn.execute(
        insert(campaign_events_t).values(
            campaign_id=campaign_id,
            from_status=status.value,
            to_status=status.value,
            source="admin",
            detail=detail,
        )
    )
