"""Expired leases: what a claim whose worker went away becomes. Never a blind re-send.

Decided from Postgres alone (the send ledger): Redis holds nothing recovery needs."""

from __future__ import annotations

from dataclasses import dataclass

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


def recover_expired_leases(engine: Engine, *, grace_s: float) -> RecoveryReport:
    """Expired leases: a webhook of the attempt has already settled the contact (the applier
    matches in-progress contacts by attempt id); what is left is released when it has no
    start mark (it never passed the start statement, so nothing of it left), or becomes Error
    "outcome unknown" once ``grace_s`` passed without a webhook.

    A start statement racing the release is settled by row locks in ``settle_leases``: a
    release whose row got a start mark meanwhile does not happen (that lease waits instead).
    """
    report = RecoveryReport()
    with engine.begin() as conn:
        leases = dispatch_db.expired_leases(conn)
        if not leases:
            return report
        now = sql.now(conn)
        settled: list[tuple[ExpiredLease, ContactState, str]] = []
        for lease in leases:
            verdict = decide_expired_lease(lease, now=now, grace_s=grace_s)
            if verdict is None:
                report.waiting += 1
                continue
            settled.append((lease, *verdict))
        if settled:
            moved = dispatch_db.settle_leases(conn, settled)
            errored = sum(1 for _, state, _ in settled if state is ContactState.ERROR)
            report.errored = errored
            # A release that lost the race to a start statement moved nothing.
            report.released = max(0, moved - errored)
    return report
