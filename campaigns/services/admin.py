"""Admin commands as use cases: start, pause, resume, cancel, remove contacts.

The legality of each command is decided by ``campaigns.domain.admin`` (pure); here it is applied
in one transaction with the campaign row locked, then the Redis pause flag follows. Postgres
is the source of truth (claims take running campaigns only); the flag is what stops sends
that are already claimed, within one message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, Engine, RowMapping

from campaigns.domain import admin as admin_rules
from campaigns.domain.phones import PhoneOk, normalize_phone
from campaigns.domain.refusals import NotFound
from campaigns.domain.states import CampaignStatus, ContactState, contact_sources
from campaigns.services.campaigns import get_campaign
from campaigns.storage import admin as admin_db
from campaigns.storage import campaign_contacts as contacts_db
from campaigns.storage import campaigns as campaigns_db
from campaigns.storage import sql
from schemas.api import CampaignOut, RemoveItem, RemoveReport, RemoveResult

S = CampaignStatus


class PauseFlagStore(Protocol):
    def set_paused(self, campaign_id: int) -> None: ...

    def clear(self, campaign_id: int) -> None: ...


def _locked(conn: Connection, campaign_id: int) -> RowMapping:
    row = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
    if row is None:
        raise NotFound("campaign", campaign_id)
    return row


def start_campaign(
    engine: Engine, flags: PauseFlagStore, campaign_id: int, *, at: datetime | None = None
) -> CampaignOut:
    with engine.begin() as conn:
        row = _locked(conn, campaign_id)
        status = S(row["status"])
        counts = contacts_db.counts_by_state(conn, campaign_id)
        now = sql.now(conn)
        target = admin_rules.check_start(
            status,
            initial_contacts=counts[ContactState.INITIAL.value],
            template=row["template_name"],
            at=at,
            now=now,
        )
        extra: dict[str, object] = {"status_reason": None}
        if target is S.SCHEDULED:
            extra["scheduled_at"] = at
        else:
            extra["started_at"] = now
        detail = f"start at {at.isoformat()}" if target is S.SCHEDULED and at else "start"
        campaigns_db.set_campaign_status(
            conn, campaign_id, status, target, source="admin", detail=detail, extra=extra
        )
    flags.clear(campaign_id)
    return get_campaign(engine, campaign_id)


def _move(
    engine: Engine,
    campaign_id: int,
    check: Callable[[CampaignStatus], CampaignStatus],
    *,
    detail: str,
    reason: str | None,
) -> None:
    """One lifecycle step of an admin command, with the campaign row locked."""
    with engine.begin() as conn:
        status = S(_locked(conn, campaign_id)["status"])
        campaigns_db.set_campaign_status(
            conn,
            campaign_id,
            status,
            check(status),
            source="admin",
            detail=detail,
            extra={"status_reason": reason},
        )


def pause_campaign(engine: Engine, flags: PauseFlagStore, campaign_id: int) -> CampaignOut:
    _move(engine, campaign_id, admin_rules.check_pause, detail="pause", reason="paused by admin")
    # After the commit: a flag without the status would only stall sends until resume.
    flags.set_paused(campaign_id)
    return get_campaign(engine, campaign_id)


def resume_campaign(engine: Engine, flags: PauseFlagStore, campaign_id: int) -> CampaignOut:
    _move(engine, campaign_id, admin_rules.check_resume, detail="resume", reason=None)
    flags.clear(campaign_id)
    return get_campaign(engine, campaign_id)


def cancel_campaign(engine: Engine, flags: PauseFlagStore, campaign_id: int) -> CampaignOut:
    """As pause, then every unclaimed contact becomes Canceled by admin. Claims in flight are
    given back by their batch (which then cancels them) or finish their one send."""
    # The flag goes up first: a cancel must stop sends even if the commit below waits on a
    # batch's lock of the campaign row. If the command is refused, the flag comes down again.
    flags.set_paused(campaign_id)
    try:
        with engine.begin() as conn:
            status = S(_locked(conn, campaign_id)["status"])
            target = admin_rules.check_cancel(status)
            campaigns_db.set_campaign_status(
                conn,
                campaign_id,
                status,
                target,
                source="admin",
                detail="cancel",
                extra={"status_reason": "cancelled by admin", "finished_at": sql.now(conn)},
            )
            admin_db.cancel_pending(conn, campaign_id, detail="campaign cancelled")
    except Exception:
        with engine.connect() as conn:
            row = campaigns_db.get_campaign(conn, campaign_id)
        if row is not None and row["status"] == S.RUNNING.value:
            flags.clear(campaign_id)
        raise
    return get_campaign(engine, campaign_id)


def remove_contacts(
    engine: Engine, campaign_id: int, *, ids: Sequence[int] = (), phones: Sequence[str] = ()
) -> RemoveReport:
    """Contacts named by id or phone -> Removed; one report line per item given."""
    removable = contact_sources(ContactState.REMOVED)
    with engine.begin() as conn:
        row = _locked(conn, campaign_id)
        admin_rules.check_remove(S(row["status"]))
        region = row["default_region"]
        e164_of: dict[str, str | None] = {}
        unparsable: dict[str, str] = {}  # phone as given -> why it is not a phone number
        for phone in phones:
            parsed = normalize_phone(phone, region)
            if isinstance(parsed, PhoneOk):
                e164_of[phone] = parsed.e164
            else:
                e164_of[phone] = None
                unparsable[phone] = parsed.detail
        found = admin_db.find_contacts(
            conn,
            campaign_id,
            ids=list(ids),
            phones=[p for p in e164_of.values() if p is not None],
        )
        by_id = {int(r["id"]): r for r in found}
        by_phone = {str(r["phone_e164"]): r for r in found if r["phone_e164"]}
        items: list[RemoveItem] = []
        to_remove: set[int] = set()

        def judge(label: str, contact: RowMapping | None) -> None:
            if contact is None:
                items.append(RemoveItem(contact=label, result=RemoveResult.NOT_FOUND))
                return
            state = ContactState(contact["state"])
            cid = int(contact["id"])
            if state in removable or cid in to_remove:
                to_remove.add(cid)
                items.append(RemoveItem(contact=label, result=RemoveResult.SUCCESS, contact_id=cid))
            else:
                items.append(
                    RemoveItem(
                        contact=label,
                        result=RemoveResult.FAILURE,
                        contact_id=cid,
                        message=f"contact is {state.value}: it cannot be removed",
                    )
                )

        for contact_id in ids:
            judge(str(contact_id), by_id.get(contact_id))
        for phone, e164 in e164_of.items():
            if phone in unparsable:  # no contact can have it: say so rather than "not found"
                items.append(
                    RemoveItem(
                        contact=phone,
                        result=RemoveResult.FAILURE,
                        message=f"not a phone number: {unparsable[phone]}",
                    )
                )
            else:
                judge(phone, by_phone.get(e164) if e164 else None)
        removed = admin_db.remove_contacts(conn, campaign_id, sorted(to_remove), detail="removed")
    return RemoveReport(campaign_id=campaign_id, items=items, removed=removed)
