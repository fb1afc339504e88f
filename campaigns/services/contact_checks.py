"""The contacts check (seeds 002, 004): ``POST /contacts/check`` and a ``--check-contacts``
campaign's check before its first send.

With a provider (``WHATSAPP_CONTACTS_URL``) numbers the registry checked within
``CONTACT_CHECK_TTL_H`` are answered from it (unless ``force_check``); the others are asked
with ``blocking: wait``, at ``CONTACT_CHECK_RATE_PER_S`` per sender, and their answers kept.
``no_wait`` answers the cached ones at once and the rest ``processing``: a Celery task asks
for them (each number queued once at a time) and a repeated call finds the answer. Without a
provider the registry answers from real sends (``domain.contact_checks.registry_answer``).

Only a campaign created with ``check_contacts`` checks numbers in bulk (seed 002: checking
many numbers without sending to them gets the business banned).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from campaigns.clients.contact_checks import CheckRate, ContactsClient, ContactsUnavailable
from campaigns.domain.contact_checks import (
    CACHEABLE,
    Answer,
    CheckStatus,
    cached_answer,
    in_order,
    parse_input,
    provider_answer,
    registry_answer,
)
from campaigns.domain.registry import Change, Learned
from campaigns.storage import campaigns as campaigns_db
from campaigns.storage import contact_checks as checks_db
from campaigns.storage import registry as registry_db
from campaigns.storage import sql
from schemas.registry import CheckItem, CheckOut

QueueChecks = Callable[[list[str], bool], list[str]]
"""Queues a no_wait check of these numbers (force_check); returns the ones it queued."""

Tally = Counter[tuple[str, bool]]
"""Answers by (status, answered from the registry), for ``wa_contact_checks_total``."""


@dataclass
class Checker:
    engine: Engine
    ttl_h: float
    sender_id: str
    client: ContactsClient | None = None  # None: the registry answers (Cloud API only)
    rate: CheckRate | None = None

    @property
    def ttl(self) -> timedelta:
        return timedelta(hours=self.ttl_h)

    async def check(
        self,
        items: Sequence[Any],
        *,
        blocking: str,
        force_check: bool,
        queue: QueueChecks | None = None,
    ) -> tuple[CheckOut, Tally]:
        """The answer to ``POST /contacts/check``, in input order."""
        parsed = [parse_input(item) for item in items]
        numbers = list(dict.fromkeys(p.e164 for p in parsed if p.e164 is not None))
        if self.client is None:
            answers = await asyncio.to_thread(self._registry_answers, numbers)
        else:
            answers = await asyncio.to_thread(self.cached, numbers, force_check)
            missing = [n for n in numbers if n not in answers]
            if blocking == "wait" or queue is None:
                answers |= await self.ask(missing, force_check=force_check)
            else:
                await asyncio.to_thread(queue, missing, force_check)
                answers |= {n: Answer(CheckStatus.PROCESSING) for n in missing}
        out: list[CheckItem] = []
        tally: Tally = Counter()
        for index, answer in in_order(parsed, answers):
            out.append(CheckItem(input=items[index], **_fields(answer)))
            tally[(answer.status.value, answer.cached)] += 1
        return CheckOut(contacts=out), tally

    async def ask(
        self, numbers: Sequence[str], *, force_check: bool = False, sender_id: str | None = None
    ) -> dict[str, Answer]:
        """Asks the provider (rate limited per sender) and keeps what it answered."""
        if not numbers:
            return {}
        if self.client is None:
            return await asyncio.to_thread(self._registry_answers, numbers)
        if self.rate is not None:
            await self.rate.wait(sender_id or self.sender_id, len(numbers))
        try:
            raw = await self.client.check(numbers, force_check=force_check)
        except ContactsUnavailable as exc:
            return {n: Answer(CheckStatus.FAILED, message=str(exc)) for n in numbers}
        answers = {n: provider_answer(raw.get(n)) for n in numbers}
        await asyncio.to_thread(self._keep, answers)
        return answers

    def cached(self, numbers: Sequence[str], force_check: bool) -> dict[str, Answer]:
        if force_check or not numbers:
            return {}
        with self.engine.connect() as conn:
            now = sql.now(conn)
            people = registry_db.people_by_phone(conn, numbers)
        out: dict[str, Answer] = {}
        for number in numbers:
            answer = cached_answer(people.get(number), now=now, ttl=self.ttl)
            if answer is not None:
                out[number] = answer
        return out

    def _registry_answers(self, numbers: Sequence[str]) -> dict[str, Answer]:
        if not numbers:
            return {}
        with self.engine.connect() as conn:
            now = sql.now(conn)
            people = registry_db.people_by_phone(conn, numbers)
            delivered = registry_db.delivered_since(conn, numbers, now - self.ttl)
        return {
            n: registry_answer(n, people.get(n), delivered=n in delivered, ttl_h=self.ttl_h)
            for n in numbers
        }

    def _keep(self, answers: dict[str, Answer]) -> None:
        with self.engine.begin() as conn:
            at = sql.now(conn)
            facts = [
                (n, Learned(Change.CHECKED, at, wa_id=a.wa_id, check_status=a.status.value))
                for n, a in sorted(answers.items())
                if a.status in CACHEABLE
            ]
            if facts:
                registry_db.apply(conn, facts)


def _fields(answer: Answer) -> dict[str, Any]:
    return {"status": answer.status, "wa_id": answer.wa_id, "message": answer.message}


# --------------------------------------------------------------------------- campaigns

CHECK_PAGE = 100  # numbers per provider call of a campaign's check


@dataclass(frozen=True)
class CampaignCheckStep:
    more: bool  # call again with ``after_id``
    after_id: int
    checked: int = 0
    not_on_whatsapp: int = 0
    tally: Tally | None = None


async def check_campaign(
    checker: Checker,
    campaign_id: int,
    *,
    after_id: int,
    budget_s: float,
    sender_id: str,
    clock: Callable[[], float],
) -> CampaignCheckStep:
    """Checks the campaign's Initial contacts after ``after_id`` for up to ``budget_s``;
    the ones without WhatsApp end Sending failed (``not_on_whatsapp``) without a send, the
    others keep the wa_id it answered. When none is left, the check is marked done and
    dispatch may send."""
    deadline = clock() + budget_s
    checked = ended = 0
    tally: Tally = Counter()
    while True:
        rows = await asyncio.to_thread(_page, checker.engine, campaign_id, after_id)
        if rows is None:  # no longer running, or done already
            return CampaignCheckStep(False, after_id, checked, ended, tally)
        if not rows:
            detail = f"contacts checked before the first send (up to contact {after_id})"
            await asyncio.to_thread(_mark_checked, checker.engine, campaign_id, detail)
            return CampaignCheckStep(False, after_id, checked, ended, tally)
        numbers = list(dict.fromkeys(phone for _, phone in rows))
        answers = await asyncio.to_thread(checker.cached, numbers, False)
        answers |= await checker.ask([n for n in numbers if n not in answers], sender_id=sender_id)
        for answer in answers.values():
            tally[(answer.status.value, answer.cached)] += 1
        ended += await asyncio.to_thread(_settle_page, checker.engine, campaign_id, rows, answers)
        checked += len(rows)
        after_id = rows[-1][0]
        if clock() >= deadline:
            return CampaignCheckStep(True, after_id, checked, ended, tally)


def _page(engine: Engine, campaign_id: int, after_id: int) -> list[tuple[int, str]] | None:
    with engine.connect() as conn:
        if campaign_id not in checks_db.awaiting_check(conn):
            return None
        return checks_db.page(conn, campaign_id, after_id=after_id, limit=CHECK_PAGE)


def _settle_page(
    engine: Engine, campaign_id: int, rows: list[tuple[int, str]], answers: dict[str, Answer]
) -> int:
    invalid = [cid for cid, phone in rows if answers[phone].status is CheckStatus.INVALID]
    wa_ids = {cid: wa_id for cid, phone in rows if (wa_id := answers[phone].wa_id) is not None}
    with engine.begin() as conn:
        checks_db.set_wa_ids(conn, wa_ids)
        return checks_db.end_not_on_whatsapp(conn, campaign_id, invalid)


def _mark_checked(engine: Engine, campaign_id: int, detail: str) -> None:
    with engine.begin() as conn:
        checks_db.mark_checked(conn, campaign_id, detail)


def campaigns_awaiting_check(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return checks_db.awaiting_check(conn)


def sender_of(engine: Engine, campaign_id: int, default_sender: str) -> str:
    with engine.connect() as conn:
        row = campaigns_db.get_campaign(conn, campaign_id)
    return (row["phone_number_id"] if row else None) or default_sender
