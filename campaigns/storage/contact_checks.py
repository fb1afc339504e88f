"""SQL of a ``--check-contacts`` campaign's check: its contacts a page at a time, the ones
found without WhatsApp ended, the wa_ids kept, the check marked done. Functions take a
Connection and never commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Connection, insert, text

from campaigns.domain.registry import SUPPRESSION_REASONS, Suppression
from campaigns.domain.states import CampaignStatus, ContactState, contact_transition
from campaigns.storage.tables import campaign_events_t

_NOT_ON_WHATSAPP = Suppression.NOT_ON_WHATSAPP
# The table allows it (a check before the first send); a state write goes through it.
_TARGET = contact_transition(ContactState.INITIAL, ContactState.SENDING_FAILED)


def awaiting_check(conn: Connection) -> list[int]:
    """Running campaigns whose contacts check has not finished."""
    rows = conn.execute(
        text(
            "SELECT id FROM campaigns WHERE status = 'running' AND check_contacts "
            "AND contacts_checked_at IS NULL ORDER BY id"
        )
    )
    return [int(r) for r in rows.scalars()]


def page(conn: Connection, campaign_id: int, *, after_id: int, limit: int) -> list[tuple[int, str]]:
    """(contact id, E.164) of the campaign's Initial contacts after ``after_id``, in id order."""
    rows = conn.execute(
        text(
            """
            SELECT id, phone_e164 FROM contacts
            WHERE id > :after AND campaign_id = :cid AND state = 'initial'
              AND phone_e164 IS NOT NULL
            ORDER BY id LIMIT :limit
            """
        ),
        {"after": after_id, "cid": campaign_id, "limit": limit},
    )
    return [(int(r.id), str(r.phone_e164)) for r in rows]


def end_not_on_whatsapp(conn: Connection, campaign_id: int, contact_ids: Sequence[int]) -> int:
    """Initial -> Sending failed (``not_on_whatsapp``) without a send."""
    if not contact_ids:
        return 0
    result = conn.execute(
        text(
            f"""
            WITH moved AS (
                UPDATE contacts SET state = '{_TARGET.value}',
                    reason_code = '{_NOT_ON_WHATSAPP.value}', reason = :reason,
                    finished_at = now(), updated_at = now()
                WHERE id = ANY(CAST(:ids AS bigint[])) AND campaign_id = :cid
                  AND state = 'initial'
                RETURNING id
            ), events AS (
                INSERT INTO contact_events
                    (contact_id, campaign_id, from_state, to_state, source, detail)
                SELECT id, :cid, 'initial', '{_TARGET.value}', 'contacts check',
                       '{_NOT_ON_WHATSAPP.value}'
                FROM moved
            )
            SELECT count(*) FROM moved
            """
        ),
        {
            "ids": sorted(contact_ids),
            "cid": campaign_id,
            "reason": SUPPRESSION_REASONS[_NOT_ON_WHATSAPP],
        },
    )
    return int(result.scalar_one())


def set_wa_ids(conn: Connection, wa_ids: Mapping[int, str]) -> None:
    """The wa_id the check answered, on each contact (contact id -> wa_id)."""
    if not wa_ids:
        return
    ids = sorted(wa_ids)
    conn.execute(
        text(
            """
            UPDATE contacts c SET wa_id = v.wa_id
            FROM unnest(CAST(:ids AS bigint[]), CAST(:wa_ids AS text[])) AS v(id, wa_id)
            WHERE c.id = v.id AND c.wa_id IS DISTINCT FROM v.wa_id
            """
        ),
        {"ids": ids, "wa_ids": [wa_ids[i] for i in ids]},
    )


def mark_checked(conn: Connection, campaign_id: int, detail: str) -> bool:
    """The check is done (once): dispatch may send from now on."""
    done = conn.execute(
        text(
            "UPDATE campaigns SET contacts_checked_at = now(), updated_at = now() "
            "WHERE id = :cid AND contacts_checked_at IS NULL RETURNING id"
        ),
        {"cid": campaign_id},
    ).first()
    if done is not None:
        running = CampaignStatus.RUNNING.value
        conn.execute(
            insert(campaign_events_t).values(
                campaign_id=campaign_id,
                from_status=running,
                to_status=running,
                source="contacts check",
                detail=detail,
            )
        )
    return done is not None
