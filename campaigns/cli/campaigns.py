"""Campaigns: ``campaign create``, ``campaign list`` and ``status ID [--watch]``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from campaigns.cli import output

if TYPE_CHECKING:
    from schemas.api import CampaignOut

ENDED = frozenset({"completed", "cancelled"})  # a watch ends with the campaign


@click.group("campaign")
def campaign_group() -> None:
    """Create and list campaigns."""


@campaign_group.command("create")
@click.option("--name", required=True, help="Campaign name.")
@click.option("--template", help="Approved template name.")
@click.option("--language", default="en", show_default=True, help="Template language.")
@click.option("--region", required=True, help="Default region of the numbers, e.g. DE.")
@click.option("--variables", help="CSV columns filling the template body, comma-separated.")
@click.option("--phone-number-id", help="Sender phone number id.")
@click.option("--rate", type=float, default=80.0, show_default=True, help="Messages per second.")
@click.option("--max-attempts", type=int, default=5, show_default=True, help="Sends per contact.")
@click.option(
    "--send-window",
    metavar="HH:MM-HH:MM",
    help="Send only in this daily window of the recipient's local time (may wrap midnight).",
)
@click.option(
    "--send-window-tz",
    metavar="ZONE",
    help="IANA zone for numbers whose own zones do not settle the window (needed with it).",
)
@click.option(
    "--require-opt-in",
    is_flag=True,
    help="Refuse people without an opt-in (registry or the upload's opted_in column).",
)
@click.option(
    "--check-contacts",
    is_flag=True,
    help="Check every valid contact before the first send (not on WhatsApp: no send).",
)
@click.option(
    "--named-variables",
    is_flag=True,
    help="The template names its variables ({{first_name}}): each is sent by its column name.",
)
@output.json_option
def create(
    name: str,
    template: str | None,
    language: str,
    region: str,
    variables: str | None,
    phone_number_id: str | None,
    rate: float,
    max_attempts: int,
    send_window: str | None,
    send_window_tz: str | None,
    require_opt_in: bool,
    check_contacts: bool,
    named_variables: bool,
) -> None:
    """Create a draft campaign."""
    from pydantic import ValidationError

    from campaigns.domain.refusals import Refusal
    from campaigns.runtime.stores import resolve
    from campaigns.services import campaigns as campaign_service
    from schemas.api import CampaignCreate, validation_message

    try:
        body = CampaignCreate(
            name=name,
            template=template,
            language=language,
            region=region,
            body_variables=[v.strip() for v in (variables or "").split(",") if v.strip()],
            phone_number_id=phone_number_id,
            rate_per_s=rate,
            max_attempts=max_attempts,
            send_window=send_window,
            send_window_tz=send_window_tz,
            require_opt_in=require_opt_in,
            check_contacts=check_contacts,
            named_variables=named_variables,
        )
    except ValidationError as exc:
        raise Refusal("invalid_campaign", validation_message(exc.errors())) from exc
    campaign = campaign_service.create_campaign(resolve().engine, body)
    output.emit(campaign, f"campaign {campaign.id} created: {campaign.name}")


@campaign_group.command("list")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Page size."
)
@click.option("--after-id", type=int, help="The page after this id (the last one shown).")
@output.json_option
def list_(limit: int, after_id: int | None) -> None:
    """List campaigns, newest first, a page at a time."""
    from campaigns.runtime.stores import resolve
    from campaigns.services import campaigns as campaign_service

    campaigns = campaign_service.list_campaigns(resolve().engine, limit=limit, after_id=after_id)
    # A full page may have more after it (the service caps a page at MAX_PAGE).
    more = bool(campaigns) and len(campaigns) == min(limit, campaign_service.MAX_PAGE)
    output.emit(
        {
            "campaigns": [c.model_dump(mode="json") for c in campaigns],
            "next_after_id": campaigns[-1].id if more else None,
        },
        [f"{c.id:>5}  {c.status.value:<10} {c.total:>9} contacts  {c.name}" for c in campaigns],
    )


@click.command("status")
@click.argument("campaign_id", type=int)
@click.option("--watch", is_flag=True, help="Refresh until the campaign ends or Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(0.5, 60),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes of --watch.",
)
@output.json_option
def status(campaign_id: int, watch: bool, interval: float) -> None:
    """A campaign's status, counts per state, rate and ETA.

    With --watch the counts refresh in place until the campaign is completed or cancelled
    (or Ctrl-C); with --json too, it prints one object once the watch ends.
    """
    read = _reader(campaign_id)
    campaign = _watch(read, interval) if watch else read()
    output.emit(campaign, [] if watch else status_lines(campaign))


def _reader(campaign_id: int) -> Callable[[], CampaignOut]:
    import redis

    from campaigns.clients import telemetry
    from campaigns.runtime.stores import resolve
    from campaigns.services import campaigns as campaign_service

    runtime = resolve()
    client = redis.Redis.from_url(runtime.redis_url)

    def read() -> CampaignOut:
        return campaign_service.get_campaign(
            runtime.engine, campaign_id, rate_now=lambda cid: telemetry.rate_now(client, cid)
        )

    return read


def status_lines(campaign: CampaignOut) -> list[str]:
    reason = f" ({campaign.status_reason})" if campaign.status_reason else ""
    lines = [f"campaign {campaign.id} {campaign.name!r}: {campaign.status.value}{reason}"]
    lines += [f"  {state:<18} {n:>10,}" for state, n in campaign.counts.items() if n]
    lines.append(f"  {'total':<18} {campaign.total:>10,}")
    eta = f", ETA {campaign.eta_seconds:,.0f} s" if campaign.eta_seconds is not None else ""
    lines.append(f"  rate now {campaign.rate_now_per_s:,.1f} msg/s{eta}")
    return lines


def _watch(read: Callable[[], CampaignOut], interval: float) -> CampaignOut:
    """Shows the campaign every ``interval`` seconds until it ends or Ctrl-C; the last read."""
    view = None if output.wants_json() else output.LiveView(f"every {interval:g} s, Ctrl-C ends")
    campaign = first = read()
    try:
        for campaign in _refreshed(read, first, interval):
            if view is not None:
                view.show(status_lines(campaign))
    except KeyboardInterrupt:  # the way to leave the view: not an error
        pass
    return campaign


def _refreshed(
    read: Callable[[], CampaignOut], first: CampaignOut, interval: float
) -> Iterator[CampaignOut]:
    # An interactive view refreshed on a bounded interval; nothing publishes count changes.
    pause = threading.Event()
    campaign = first
    yield campaign
    while campaign.status.value not in ENDED:
        pause.wait(interval)
        campaign = read()
        yield campaign


COMMANDS: tuple[click.Command, ...] = (campaign_group, status)
