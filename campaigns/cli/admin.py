"""Admin commands on a campaign: ``start``, ``pause``, ``resume``, ``cancel``, ``remove``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from campaigns.cli import output

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from campaigns.clients.send_gate import SyncPauseFlags
    from schemas.api import CampaignOut

campaign_id_argument = click.argument("campaign_id", type=int)


def _deps() -> tuple[Engine, SyncPauseFlags]:
    import redis

    from campaigns.clients.send_gate import SyncPauseFlags
    from campaigns.runtime.stores import resolve

    runtime = resolve()
    return runtime.engine, SyncPauseFlags(redis.Redis.from_url(runtime.redis_url))


def _wake_dispatch() -> None:
    from workers.dispatch import wake_dispatch

    wake_dispatch()


def _show(campaign: CampaignOut) -> None:
    reason = f" ({campaign.status_reason})" if campaign.status_reason else ""
    output.emit(campaign, f"campaign {campaign.id}: {campaign.status.value}{reason}")


@click.command("start")
@campaign_id_argument
@click.option("--at", metavar="TIME", help="ISO 8601 time with zone, e.g. 2026-12-01T09:00:00Z.")
@output.json_option
def start(campaign_id: int, at: str | None) -> None:
    """Start a draft campaign now, or schedule it --at a time."""
    from datetime import datetime

    from campaigns.domain.refusals import Refusal
    from campaigns.services import admin

    when = None
    if at:
        try:
            when = datetime.fromisoformat(at)
        except ValueError as exc:
            raise Refusal("bad_time", f"--at {at!r} is not an ISO 8601 time") from exc
    engine, flags = _deps()
    campaign = admin.start_campaign(engine, flags, campaign_id, at=when)
    _wake_dispatch()
    _show(campaign)


@click.command("pause")
@campaign_id_argument
@output.json_option
def pause(campaign_id: int) -> None:
    """Pause a running campaign."""
    from campaigns.services import admin

    engine, flags = _deps()
    _show(admin.pause_campaign(engine, flags, campaign_id))


@click.command("resume")
@campaign_id_argument
@output.json_option
def resume(campaign_id: int) -> None:
    """Resume a paused campaign."""
    from campaigns.services import admin

    engine, flags = _deps()
    campaign = admin.resume_campaign(engine, flags, campaign_id)
    _wake_dispatch()
    _show(campaign)


@click.command("cancel")
@campaign_id_argument
@output.json_option
def cancel(campaign_id: int) -> None:
    """Cancel a campaign (unsent contacts: canceled_by_admin)."""
    from campaigns.services import admin

    engine, flags = _deps()
    _show(admin.cancel_campaign(engine, flags, campaign_id))


@click.command("remove")
@campaign_id_argument
@click.option("--contact", "ids", type=int, multiple=True, help="Contact id; repeatable.")
@click.option("--phone", "phones", multiple=True, help="Phone number; repeatable.")
@output.json_option
def remove(campaign_id: int, ids: tuple[int, ...], phones: tuple[str, ...]) -> None:
    """Remove contacts of a draft or paused campaign."""
    from campaigns.domain.refusals import Refusal
    from campaigns.services import admin

    if not ids and not phones:
        raise Refusal("nothing_to_remove", "name contacts with --contact ID or --phone NUMBER")
    engine, _ = _deps()
    report = admin.remove_contacts(engine, campaign_id, ids=list(ids), phones=list(phones))
    lines = [
        f"{item.contact:<20} {item.result.value}" + (f"  {item.message}" if item.message else "")
        for item in report.items
    ]
    output.emit(report, [*lines, f"removed {report.removed}"])


COMMANDS: tuple[click.Command, ...] = (start, pause, resume, cancel, remove)
