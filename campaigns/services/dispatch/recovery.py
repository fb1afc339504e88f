"""Expired leases: what a claim whose worker went away becomes. Never a blind re-send."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from campaigns.domain.dispatch import ExpiredLease, decide_expired_lease
from campaigns.domain.states import ContactState
from campaigns.storage import dispatch as dispatch_db
from campaigns.storage import sql


@dataclass
class RecoveryReport:
    released: int = 0
    errored: int = 0
    waiting: int = 0


def recover_expired_leases(
    engine: Engine,
    started_probe: Callable[[Sequence[uuid.UUID]], set[uuid.UUID]],
    *,
    grace_s: float,
    markers_since: Callable[[], datetime | None] | None = None,
) -> RecoveryReport:
    """Expired leases: never a blind re-send. A webhook of the attempt has already settled the
    contact (the applier matches in-progress contacts by attempt id); what is left is released
    when the send provably never started, or becomes Error after the grace period.

    ``markers_since`` (one call per pass, only when leases expired) says since when Redis
    holds every marker (``markers_trusted``)."""
    report = RecoveryReport()
    with engine.begin() as conn:
        leases = dispatch_db.expired_leases(conn)
        if not leases:
            return report
        now = sql.now(conn)
        started = started_probe([lease.attempt_id for lease in leases])
        # Asked after the probe: a restart between the two then shows, never the reverse
        # (markers lost after we asked, read as trustworthy).
        since = markers_since() if markers_since is not None else None
        settled: list[tuple[ExpiredLease, ContactState, str]] = []
        for lease in leases:
            verdict = decide_expired_lease(
                lease,
                started=lease.attempt_id in started,
                now=now,
                grace_s=grace_s,
                markers_since=since,
            )
            if verdict is None:
                report.waiting += 1
                continue
            settled.append((lease, *verdict))
            if verdict[0] is ContactState.ERROR:
                report.errored += 1
            else:
                report.released += 1
        if settled:
            dispatch_db.settle_leases(conn, settled)
    return report
