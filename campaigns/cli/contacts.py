"""The contact registry: ``contact show|block|unblock|opt-in|opt-out|remove|check|bulk``.

PHONE is an E.164 number with or without its + (``+4915123456789``, ``4915123456789``) or a
wa_id; anything else is refused (exit 2, ``invalid_phone``), as is an unknown person where
one must exist (``contact_not_found``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from campaigns.cli import output

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from schemas.registry import BulkReport, CheckOut, PersonOut

phone_argument = click.argument("phone")


def _engine() -> Engine:
    from campaigns.runtime.stores import resolve

    return resolve().engine


@click.group("contact")
def contact_group() -> None:
    """The contact registry: one record per person across every campaign."""


def _lines(person: PersonOut) -> list[str]:
    status = person.status or "-"
    lines = [f"{person.phone_e164}  status {status}  wa_id {person.wa_id or '-'}"]
    if person.unavailable_since:
        lines.append(f"  unavailable since {person.unavailable_since} ({person.unavailable_code})")
    if person.blocked_at:
        lines.append(f"  blocked at {person.blocked_at}: {person.blocked_reason or ''}")
    if person.opted_in:
        lines.append(f"  opted in {person.opted_in_at} ({person.opt_in_source})")
    if person.opted_out:
        lines.append(f"  opted out {person.opted_out_at} ({person.opt_out_source})")
    if person.check_status:
        lines.append(f"  checked {person.checked_at}: {person.check_status}")
    if person.removed_at:
        lines.append(f"  record removed {person.removed_at}; the opt-out stays")
    lines += [
        f"  campaign {c.campaign_id} {c.campaign_name!r}: {c.state}"
        + (f" ({c.reason_code})" if c.reason_code else "")
        for c in person.campaigns
    ]
    return lines


def _show(person: PersonOut) -> None:
    output.emit(person, _lines(person))


@contact_group.command("show")
@phone_argument
@output.json_option
def show(phone: str) -> None:
    """A person's record and the campaigns it is in."""
    from campaigns.services import registry

    _show(registry.get_person(_engine(), phone))


@contact_group.command("block")
@phone_argument
@click.option("--reason", help="Why (kept with the record).")
@output.json_option
def block(phone: str, reason: str | None) -> None:
    """Block a person: refused at upload and at send time."""
    from campaigns.services import registry

    _show(registry.block(_engine(), phone, reason))


@contact_group.command("unblock")
@phone_argument
@output.json_option
def unblock(phone: str) -> None:
    """Unblock a person."""
    from campaigns.services import registry

    _show(registry.unblock(_engine(), phone))


@contact_group.command("opt-in")
@phone_argument
@click.option("--source", help="Where the opt-in came from (default: operator).")
@output.json_option
def opt_in(phone: str, source: str | None) -> None:
    """Record the person's own opt-in (it clears any opt-out)."""
    from campaigns.services import registry

    _show(registry.opt_in(_engine(), phone, source))


@contact_group.command("opt-out")
@phone_argument
@click.option("--source", help="Where the opt-out came from (default: operator).")
@output.json_option
def opt_out(phone: str, source: str | None) -> None:
    """Record an opt-out: refused at upload and at send time."""
    from campaigns.services import registry

    _show(registry.opt_out(_engine(), phone, source))


@contact_group.command("remove")
@phone_argument
@output.json_option
def remove(phone: str) -> None:
    """Remove a record (an opt-out stays).

    UNAVAILABLE and BLOCKED go with it; only the person's own opt-in clears an opt-out."""
    from campaigns.services import registry

    removed = registry.remove(_engine(), phone)
    kept = "; the opt-out stays" if removed.opted_out else ""
    output.emit(removed, f"{removed.phone_e164} removed{kept}")


@contact_group.command("check")
@click.argument("phones", nargs=-1, required=True)
@click.option("--no-wait", is_flag=True, help="Answer unchecked numbers 'processing' at once.")
@click.option("--force-check", is_flag=True, help="Ask the provider even within the TTL.")
@output.json_option
def check(phones: tuple[str, ...], no_wait: bool, force_check: bool) -> None:
    """Check numbers: valid, invalid, processing, failed.

    Answers within CONTACT_CHECK_TTL_H come from the registry; without
    WHATSAPP_CONTACTS_URL the registry answers from real sends."""
    result = _check(list(phones), blocking="no_wait" if no_wait else "wait", force=force_check)
    output.emit(
        result,
        [
            f"{item.input!s:<24} {item.status.value:<10} {item.wa_id or item.message or ''}"
            for item in result.contacts
        ],
    )


def _check(phones: list[str], *, blocking: str, force: bool) -> CheckOut:
    import asyncio
    from collections import Counter

    import redis
    import redis.asyncio as aioredis

    from campaigns.clients.telemetry import SyncTelemetry
    from campaigns.runtime.contact_checks import make_checker
    from campaigns.runtime.stores import resolve
    from workers.contact_checks import queue_checks

    runtime = resolve()

    async def run() -> tuple[CheckOut, Counter[tuple[str, bool]]]:
        client = aioredis.Redis.from_url(runtime.redis_url)
        try:
            checker = make_checker(runtime, client)
            return await checker.check(
                phones, blocking=blocking, force_check=force, queue=queue_checks
            )
        finally:
            await client.aclose()

    result, tally = asyncio.run(run())
    SyncTelemetry(redis.Redis.from_url(runtime.redis_url)).record_contact_checks(tally)
    return result


BULK_OPERATIONS = ("block", "unblock", "opt_in", "opt_out", "remove")


@contact_group.command("bulk")
@click.argument("operation", type=click.Choice(BULK_OPERATIONS))
@click.argument("phones", nargs=-1)
@click.option(
    "--file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="One phone per line (besides or instead of PHONES).",
)
@click.option("--reason", help="Block reason, or the opt-in / opt-out source.")
@output.json_option
def bulk(
    operation: str, phones: tuple[str, ...], from_file: Path | None, reason: str | None
) -> None:
    """One operation on many people, a result each.

    Up to 10,000 people: SUCCESS, NOT_FOUND or FAILURE (with why) per item, in order."""
    from campaigns.domain.refusals import Refusal
    from campaigns.services import registry
    from schemas.registry import MAX_BULK, BulkOperation

    items = list(phones)
    if from_file is not None:
        lines = from_file.read_text(encoding="utf-8-sig").splitlines()
        items += [line.strip() for line in lines if line.strip()]
    if not items or len(items) > MAX_BULK:
        raise Refusal("bad_bulk", f"give 1 to {MAX_BULK:,} phones (got {len(items):,})")
    report: BulkReport = registry.bulk(_engine(), BulkOperation(operation), items, reason)
    output.emit(
        report,
        [
            f"{r.input:<24} {r.result.value:<10} {r.message or r.phone_e164 or ''}"
            for r in report.results
        ],
    )


COMMANDS: tuple[click.Command, ...] = (contact_group,)
