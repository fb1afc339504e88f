"""Delivery webhooks: receive (verify, store raw), apply (batches of statuses), report.

Use cases: each owns its transactions and does no
network I/O inside one. The receiver stores the raw body and returns; the applier, run by the
``webhooks`` Celery queue, claims inbox rows in batches and settles every status of a batch
with a few set-based statements (:mod:`campaigns.storage.webhooks`) under the rules of
:mod:`campaigns.domain.webhooks`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import lru_cache
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, RowMapping
from sqlalchemy.exc import DBAPIError

from campaigns.domain import bounded_json
from campaigns.domain.states import ContactState
from campaigns.domain.webhooks import (
    DEFAULT_OPT_OUT_WORDS,
    REASON_CHARS,
    Delivery,
    Effect,
    StatusEvent,
    StatusKind,
    give_up_retry,
    is_opt_out,
    opt_out_words,
    retry_delay_s,
    settle,
    status_time,
)
from campaigns.services.webhooks.people import SOURCE_REPLY, PeopleFacts, apply_people
from campaigns.storage import webhooks as webhooks_db
from schemas.whatsapp import StatusUpdate, WebhookUpdates

log = logging.getLogger(__name__)

RETRY_CAP_S = 300.0  # longest wait between two tries of an unmatched status
TRANSIENT_RETRIES = 3  # a batch rolled back by a deadlock or lost connection runs again


# --------------------------------------------------------------------------- apply


@dataclass(frozen=True)
class ApplyPolicy:
    # Inbox rows per transaction: ~2,500 statuses. Larger batches save little and make each
    # commit's WAL, which the receiver's next synchronous commit has to flush, bigger.
    batch_size: int = 50
    retry_base_s: float = 1.0
    retry_cap_s: float = RETRY_CAP_S
    max_tries: int = 10
    max_age_s: float = 3600.0
    opt_out_words: frozenset[str] = field(
        default_factory=lambda: opt_out_words(DEFAULT_OPT_OUT_WORDS)
    )

    def delay_s(self, tries: int) -> float:
        return retry_delay_s(tries, base_s=self.retry_base_s, cap_s=self.retry_cap_s)

    def give_up(self, tries: int, age_s: float) -> bool:
        return give_up_retry(tries, age_s, max_tries=self.max_tries, max_age_s=self.max_age_s)


@dataclass
class ApplyStats:
    inbox_rows: int = 0  # POST bodies taken from the inbox
    rejected: int = 0  # bodies that are not a webhook envelope (stored with the reason)
    statuses: int = 0  # statuses looked at (duplicates included)
    moved: int = 0  # a contact changed state
    filled: int = 0  # a late status filled its empty timestamp only
    late: int = 0  # changed nothing: duplicate, after Read, or a contact webhooks do not settle
    ignored: int = 0  # status kinds nobody acts on (e.g. "deleted")
    parked: int = 0  # no contact yet: kept for a retry
    retried: int = 0  # parked statuses tried again
    unmatched: int = 0  # parked statuses given up on (reported to operators)
    inbound: int = 0  # new inbound messages stored
    opt_outs: int = 0  # opt-outs written (STOP replies, 131050 statuses, user_preferences)
    opt_ins: int = 0  # user_preferences opt-outs lifted by a "resume"
    user_ids: int = 0  # user id -> phone pairs learnt (new or changed)
    failed_rows: int = 0  # bodies whose apply raised (tried again later)
    more: bool = False  # work was left when the call returned
    # For metrics: matched statuses by kind, and each one's lag from its event to now.
    by_status: Counter[str] = field(default_factory=Counter)
    lags_s: list[float] = field(default_factory=list)

    @property
    def applied(self) -> int:
        """Statuses settled (whatever they did); parked ones are not yet."""
        return self.moved + self.filled + self.late + self.ignored

    def add(self, other: ApplyStats) -> None:
        for f in fields(self):
            if f.name == "more":
                self.more = other.more
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lags_s"}
        out["by_status"] = dict(self.by_status)
        out["applied"] = self.applied
        return out


@dataclass(frozen=True, slots=True)
class _Incoming:
    """One status of a batch, ready to match and apply."""

    inbox_id: int
    wamid: str
    attempt_id: uuid.UUID | None
    raw_status: str
    recipient_id: str | None
    event: StatusEvent

    def parked(self) -> webhooks_db.ParkedStatus:
        return webhooks_db.ParkedStatus(
            inbox_id=self.inbox_id,
            wamid=self.wamid,
            attempt_id=self.attempt_id,
            status=self.raw_status,
            status_at=self.event.at,
            recipient_id=self.recipient_id,
            error_code=self.event.error_code,
            error_detail=self.event.error_detail,
        )


def _attempt_id(raw: str | None) -> uuid.UUID | None:
    """``biz_opaque_callback_data`` as the attempt id; anything else is not ours to match."""
    return _parse_attempt_id(raw) if raw else None


@lru_cache(maxsize=65536)  # a message's statuses repeat its attempt id
def _parse_attempt_id(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        return None


def _error_of(status: StatusUpdate) -> tuple[int | None, str | None]:
    if not status.errors:
        return None, None
    first = status.errors[0]
    details = first.error_data.details if first.error_data else None
    parts = [p for p in (first.title or first.message, details) if p]
    return first.code, (": ".join(parts)[:REASON_CHARS] or None)


def _incoming(inbox_id: int, status: StatusUpdate, received_at: datetime) -> _Incoming:
    kind = StatusKind.parse(status.status)
    code, detail = _error_of(status) if kind is StatusKind.FAILED else (None, None)
    return _Incoming(
        inbox_id=inbox_id,
        wamid=status.id,
        attempt_id=_attempt_id(status.biz_opaque_callback_data),
        raw_status=status.status,
        recipient_id=status.recipient_id,
        event=StatusEvent(
            kind=kind,
            at=status_time(status.timestamp, received_at),
            error_code=code,
            error_detail=detail,
        ),
    )


def _from_parked(parked: webhooks_db.ParkedStatus) -> _Incoming:
    return _Incoming(
        inbox_id=parked.inbox_id,
        wamid=parked.wamid,
        attempt_id=parked.attempt_id,
        raw_status=parked.status,
        recipient_id=parked.recipient_id,
        event=StatusEvent(
            kind=StatusKind.parse(parked.status),
            at=parked.status_at,
            error_code=parked.error_code,
            error_detail=parked.error_detail,
        ),
    )


def _delivery_of(row: RowMapping) -> Delivery:
    return Delivery(
        state=ContactState(row["state"]),
        sent_at=row["sent_at"],
        delivered_at=row["delivered_at"],
        read_at=row["read_at"],
        failed_at=row["failed_at"],
        error_code=row["error_code"],
        error_detail=row["error_detail"],
    )


def _apply_statuses(
    conn: Connection, incoming: Sequence[_Incoming], stats: ApplyStats
) -> list[_Incoming]:
    """Matches, folds and writes a batch of statuses; returns those no contact matched.

    Matched by wamid, else by the attempt id (the webhook beat the worker's commit of the
    wamid): then the status's id is stored as the contact's wamid. Each contact's statuses
    are folded by the pure rules under the row lock; one statement writes them all.
    """
    stats.statuses += len(incoming)
    contacts = webhooks_db.lock_contacts(
        conn,
        (s.wamid for s in incoming),
        (s.attempt_id for s in incoming if s.attempt_id is not None),
    )
    matches = _match(contacts, incoming)
    _count_matched(matches, stats)
    settlements: list[webhooks_db.Settlement] = []
    events: list[webhooks_db.EventRow] = []
    for contact_id in sorted(matches.per_contact):
        settlement = _settle_contact(matches, contact_id, stats, events)
        if settlement is not None:
            settlements.append(settlement)
    updated, _ = webhooks_db.write_settlements(conn, settlements, events)
    if updated != len(settlements):  # cannot happen under the row locks; never silent
        raise RuntimeError(f"{len(settlements) - updated} contact updates refused by the guard")
    return matches.unmatched


@dataclass
class _Matches:
    """A batch's statuses by the locked contact they belong to."""

    rows: dict[int, RowMapping]  # contact id -> its locked row
    per_contact: dict[int, list[_Incoming]]
    via_attempt: dict[int, _Incoming]  # contact id -> first status matched by attempt id
    unmatched: list[_Incoming]


def _match(contacts: Sequence[RowMapping], incoming: Sequence[_Incoming]) -> _Matches:
    by_wamid = {row["wamid"]: row for row in contacts if row["wamid"] is not None}
    by_attempt = {row["attempt_id"]: row for row in contacts if row["attempt_id"] is not None}
    matches = _Matches({int(row["id"]): row for row in contacts}, defaultdict(list), {}, [])
    for status in incoming:
        row = by_wamid.get(status.wamid)
        if row is None and status.attempt_id is not None:
            row = by_attempt.get(status.attempt_id)
            if row is not None:
                matches.via_attempt.setdefault(int(row["id"]), status)
        if row is None:
            matches.unmatched.append(status)
        else:
            matches.per_contact[int(row["id"])].append(status)
    return matches


def _count_matched(matches: _Matches, stats: ApplyStats) -> None:
    """Matched statuses by kind, and each one's lag from its event to now (metrics)."""
    now = time.time()
    for statuses in matches.per_contact.values():
        for status in statuses:
            stats.by_status[status.event.kind.value] += 1
            stats.lags_s.append(now - status.event.at.timestamp())


def _settle_contact(
    matches: _Matches, contact_id: int, stats: ApplyStats, events: list[webhooks_db.EventRow]
) -> webhooks_db.Settlement | None:
    """Folds one contact's statuses; its events are appended, its update returned (None when
    nothing about the contact changes)."""
    row = matches.rows[contact_id]
    statuses = matches.per_contact[contact_id]
    first = matches.via_attempt.get(contact_id)
    before = _delivery_of(row)
    after, steps = settle(before, (s.event for s in statuses))
    for step in steps:
        if step.effect is Effect.MOVED:
            stats.moved += 1
            events.append(
                webhooks_db.EventRow(
                    contact_id=contact_id,
                    campaign_id=int(row["campaign_id"]),
                    from_state=step.from_state.value,
                    to_state=step.to_state.value,
                    detail=_event_detail(step.event, first is not None),
                )
            )
        elif step.effect is Effect.FILLED:
            stats.filled += 1
        elif step.effect is Effect.LATE:
            stats.late += 1
        else:
            stats.ignored += 1
    if after == before:
        return None
    return _settlement(contact_id, row, before, after, statuses, first)


def _settlement(
    contact_id: int,
    row: RowMapping,
    before: Delivery,
    after: Delivery,
    statuses: Sequence[_Incoming],
    first: _Incoming | None,
) -> webhooks_db.Settlement:
    """The contact's update: the new state, and only the fields it did not have yet."""
    wamid = first.wamid if first is not None and row["wamid"] is None else None
    if first is not None and row["wamid"] not in (None, first.wamid):
        log.warning(
            "contact %s: status for %s matched by attempt id, but its wamid is another",
            contact_id,
            first.wamid,
        )
    recipient = next((s.recipient_id for s in statuses if s.recipient_id), None)
    return webhooks_db.Settlement(
        contact_id=contact_id,
        from_state=before.state.value,
        to_state=after.state.value,
        wamid=wamid,
        wa_id=recipient if row["wa_id"] is None else None,
        sent_at=after.sent_at if before.sent_at is None else None,
        delivered_at=after.delivered_at if before.delivered_at is None else None,
        read_at=after.read_at if before.read_at is None else None,
        failed_at=after.failed_at if before.failed_at is None else None,
        error_code=after.error_code,
        error_detail=after.error_detail,
    )


def _event_detail(event: StatusEvent, via_attempt: bool) -> str:
    detail = f"status {event.kind.value}"
    if event.error_code is not None:
        detail += f" {event.error_code}"
    if via_attempt:
        detail += " (matched by attempt id)"
    return detail


def _parse(row: webhooks_db.InboxRow) -> WebhookUpdates | str:
    """The envelope, or the reason it is rejected."""
    try:
        doc = bounded_json.loads(row.body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, nested too deep
        return f"malformed JSON: {exc}"[:REASON_CHARS]
    try:
        # json.loads + model_validate: about a third faster than model_validate_json here.
        return WebhookUpdates.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        reason = f"not a webhook envelope ({exc.error_count()} errors): {where}: {first['msg']}"
        return reason[:REASON_CHARS]


def _apply_rows(
    conn: Connection, rows: Sequence[webhooks_db.InboxRow], policy: ApplyPolicy, stats: ApplyStats
) -> None:
    """Everything of these inbox rows in the current transaction."""
    incoming: list[_Incoming] = []
    inbound: list[webhooks_db.InboundRow] = []
    facts = PeopleFacts()
    finals: dict[int, tuple[str, str | None, int]] = {}
    for row in rows:
        parsed = _parse(row)
        if isinstance(parsed, str):
            stats.rejected += 1
            finals[row.id] = ("rejected", parsed, 0)
            log.warning("webhook %s rejected: %s", row.id, parsed)
            continue
        statuses = parsed.statuses()
        incoming.extend(_incoming(row.id, s, row.received_at) for _, s in statuses)
        inbound.extend(_inbound_rows(row, parsed))
        facts.note(parsed)
        finals[row.id] = ("applied", None, len(statuses))

    unmatched = _apply_statuses(conn, incoming, stats) if incoming else []
    if unmatched:
        _park(conn, unmatched, policy, stats)

    new_messages = webhooks_db.insert_inbound(conn, inbound)
    stats.inbound += len(new_messages)
    for sender, user_id, body in new_messages:
        if is_opt_out(body, policy.opt_out_words):
            facts.stop(SOURCE_REPLY, sender, user_id)
    people = apply_people(conn, facts)
    stats.opt_outs += people.opted_out
    stats.opt_ins += people.resumed
    stats.user_ids += people.mapped

    webhooks_db.finish_inbox(conn, [(i, *final) for i, final in finals.items()])
    if unmatched and policy.give_up(1, 0.0):
        webhooks_db.mark_inbox_unmatched(conn, (s.inbox_id for s in unmatched))


def _inbound_rows(
    row: webhooks_db.InboxRow, parsed: WebhookUpdates
) -> list[webhooks_db.InboundRow]:
    out = []
    for pnid, message in parsed.inbound_messages():
        if not message.from_ and not message.from_user_id:
            # Neither a phone nor a user id: nobody to attribute it to. The body keeps it.
            log.warning("webhook %s: message %s names no sender", row.id, message.id)
            continue
        out.append(
            webhooks_db.InboundRow(
                inbox_id=row.id,
                wamid=message.id,
                from_wa_id=message.from_,
                from_user_id=message.from_user_id,
                phone_number_id=pnid,
                type=message.type,
                text=message.body,
                sent_at=status_time(message.timestamp, row.received_at),
                raw=message.model_dump(mode="json", by_alias=True),
            )
        )
    return out


def _park(
    conn: Connection, unmatched: Sequence[_Incoming], policy: ApplyPolicy, stats: ApplyStats
) -> None:
    give_up = policy.give_up(1, 0.0)
    webhooks_db.park_statuses(
        conn,
        [s.parked() for s in unmatched],
        delay_s=policy.delay_s(1),
        state="unmatched" if give_up else "waiting",
    )
    if give_up:
        stats.unmatched += len(unmatched)
    else:
        stats.parked += len(unmatched)


def _transient(exc: BaseException) -> bool:
    """Deadlock, serialization failure, lost connection: the whole batch simply runs again."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return sqlstate.startswith(("40", "08", "57"))


def apply_inbox(engine: Engine, *, policy: ApplyPolicy | None = None) -> ApplyStats:
    """Claims one batch of due inbox rows and applies all of it in one transaction.

    A row whose apply raises (a bug, a value Postgres refuses) must not block the others:
    the batch is rolled back to a savepoint and applied row by row; the failing row is
    tried again later with backoff, and rejected with the error after the last try.
    Transient database errors propagate: the rows stay pending for the next run.
    """
    policy = policy or ApplyPolicy()
    stats = ApplyStats()
    with engine.begin() as conn:
        # The raw bodies were committed durably on receipt. Should this commit be lost in a
        # crash, the rows are simply pending again and applied again: no need to wait for
        # the WAL flush here.
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        rows = webhooks_db.claim_inbox(conn, policy.batch_size)
        stats.inbox_rows = len(rows)
        stats.more = len(rows) == policy.batch_size
        if not rows:
            return stats
        try:
            with conn.begin_nested():
                batch_stats = ApplyStats()
                _apply_rows(conn, rows, policy, batch_stats)
        except Exception as exc:
            if _transient(exc):
                raise
            log.exception("webhook batch failed; applying its %d rows one by one", len(rows))
            batch_stats = _apply_one_by_one(conn, rows, policy)
        batch_stats.inbox_rows = stats.inbox_rows
        batch_stats.more = stats.more
    return batch_stats


def _apply_one_by_one(
    conn: Connection, rows: Sequence[webhooks_db.InboxRow], policy: ApplyPolicy
) -> ApplyStats:
    stats = ApplyStats()
    for row in rows:
        row_stats = ApplyStats()
        try:
            with conn.begin_nested():
                _apply_rows(conn, [row], policy, row_stats)
        except Exception as exc:
            if _transient(exc):
                raise
            tries = row.tries + 1
            give_up = tries >= policy.max_tries
            log.exception("webhook %s failed to apply (try %d)", row.id, tries)
            webhooks_db.defer_inbox(
                conn,
                row.id,
                reason=f"apply failed (try {tries}): {type(exc).__name__}: {exc}"[:REASON_CHARS],
                delay_s=policy.delay_s(tries),
                give_up=give_up,
            )
            stats.failed_rows += 1
            if give_up:
                stats.rejected += 1
            continue
        stats.add(row_stats)
    return stats


def retry_statuses(engine: Engine, *, policy: ApplyPolicy | None = None) -> ApplyStats:
    """Tries one batch of due parked statuses again; reports those past the bound."""
    policy = policy or ApplyPolicy()
    stats = ApplyStats()
    with engine.begin() as conn:
        claimed = webhooks_db.claim_retries(conn, policy.batch_size)
        stats.more = len(claimed) == policy.batch_size
        if not claimed:
            return stats
        incoming = [_from_parked(r.status) for r in claimed]
        left = {id(s) for s in _apply_statuses(conn, incoming, stats)}
        applied: list[int] = []
        again: list[tuple[int, int, float]] = []
        given_up: list[tuple[int, int]] = []  # (retry id, inbox id)
        for retry, status in zip(claimed, incoming, strict=True):
            if id(status) not in left:
                applied.append(retry.id)
                continue
            tries = retry.tries + 1
            if policy.give_up(tries, retry.age_s):
                given_up.append((retry.id, retry.status.inbox_id))
            else:
                again.append((retry.id, tries, policy.delay_s(tries)))
        webhooks_db.finish_retries(
            conn, applied=applied, again=again, given_up=[g[0] for g in given_up]
        )
        webhooks_db.mark_inbox_unmatched(conn, (g[1] for g in given_up))
        stats.retried = len(claimed)
        stats.unmatched = len(given_up)
        if given_up:
            log.warning("%d webhook statuses matched no contact and are reported", len(given_up))
    return stats


def drain(
    engine: Engine,
    *,
    policy: ApplyPolicy | None = None,
    budget_s: float = 5.0,
    retries: bool = False,
) -> ApplyStats:
    """Applies inbox batches until none is left or ``budget_s`` is spent (``more`` then set).

    With ``retries``, due parked statuses are tried again as well. Called by the Celery tasks,
    which queue themselves again while ``more`` is set.
    """
    policy = policy or ApplyPolicy()
    deadline = time.monotonic() + budget_s
    total = ApplyStats()
    for step in (apply_inbox, retry_statuses) if retries else (apply_inbox,):
        failures = 0
        while True:
            try:
                batch = step(engine, policy=policy)
            except DBAPIError as exc:
                # A deadlock victim or a dropped connection: the batch rolled back whole and
                # simply runs again; past a few in a row the task fails and beat sweeps later.
                failures += 1
                if not _transient(exc) or failures >= TRANSIENT_RETRIES:
                    raise
                log.warning("webhook batch rolled back (%s); running it again", exc.orig)
                continue
            failures = 0
            total.add(batch)
            if not batch.more:
                break
            if time.monotonic() >= deadline:
                total.more = True
                return total
    total.more = False
    return total


# --------------------------------------------------------------------------- operators
