"""Retrying only the failed: ``retry``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from campaigns.cli import output

if TYPE_CHECKING:
    from schemas.retry import RetryReport


def _lines(report: RetryReport) -> list[str]:
    queued = report.queued
    skipped = ", ".join(f"{k} {n}" for k, n in report.skipped.model_dump().items() if n)
    lines = [
        f"campaign {report.campaign_id}: queued {report.total} "
        f"(error {queued.error}, sending_failed {queued.sending_failed})",
        f"skipped: {skipped or 'none'}",
        f"campaign is {report.campaign.status.value}",
    ]
    if report.warning:
        lines.append(f"warning: {report.warning}")
    return lines


def _complete_state(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    from campaigns.domain.states import RETRYABLE_CONTACT_STATES

    return sorted(s.value for s in RETRYABLE_CONTACT_STATES if s.value.startswith(incomplete))


@click.command("retry")
@click.argument("campaign_id", type=int)
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE[,STATE]",
    shell_complete=_complete_state,
    help="error and/or sending_failed (default: both); comma list or repeated.",
)
@click.option(
    "--reason-code",
    "reason_codes",
    multiple=True,
    metavar="CODE[,CODE]",
    help="Only contacts with one of these reason codes (e.g. not_opted_in).",
)
@click.option(
    "--error-code",
    "error_codes",
    multiple=True,
    metavar="N[,N]",
    help="Only contacts whose platform error code is one of these (e.g. 131049).",
)
@click.option(
    "--include-unknown",
    is_flag=True,
    help="Also retry Error 'outcome unknown' contacts: they may get the message twice.",
)
@output.json_option
def retry(
    campaign_id: int,
    states: tuple[str, ...],
    reason_codes: tuple[str, ...],
    error_codes: tuple[str, ...],
    include_unknown: bool,
) -> None:
    """Queue a campaign's failed contacts again (error, sending_failed).

    The campaign runs again (from paused or completed). Opted-out, unavailable and blocked
    people are never retried; outcome-unknown contacts only with --include-unknown.
    """
    import redis

    from campaigns.clients.send_gate import SyncPauseFlags
    from campaigns.domain.retry import retry_filter, split_list
    from campaigns.runtime.stores import resolve
    from campaigns.services import retry as retry_service

    rule = retry_filter(  # refused (exit 2) before anything is opened
        states=split_list(states),
        reason_codes=split_list(reason_codes),
        error_codes=split_list(error_codes),
        include_unknown=include_unknown,
    )
    runtime = resolve()
    flags = SyncPauseFlags(redis.Redis.from_url(runtime.redis_url))
    report = retry_service.retry_failed(runtime.engine, flags, campaign_id, rule)
    if report.total:
        from workers.dispatch import wake_dispatch

        wake_dispatch()  # as start and resume do: sending starts now, not at the next beat
    output.emit(report, _lines(report))


COMMANDS: tuple[click.Command, ...] = (retry,)
