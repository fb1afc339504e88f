"""Admin commands and the rules for when each is legal (pure: no I/O).

Each check returns the campaign status the command leads to, or raises CommandRefused with a
message for the operator; the service applies the result through the lifecycle table.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from campaigns.domain.refusals import Refusal, RefusalKind
from campaigns.domain.states import CAMPAIGN_TRANSITIONS, CampaignStatus, campaign_transition

S = CampaignStatus


class CommandRefused(Refusal):
    """An admin command or upload that is not legal now; nothing was changed."""

    default_kind = RefusalKind.CONFLICT


class Command(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    REMOVE = "remove"
    RETRY = "retry"


# Which campaign statuses each command accepts, and where it leads.
_RULES: dict[Command, tuple[frozenset[CampaignStatus], CampaignStatus | None]] = {
    Command.START: (frozenset({S.DRAFT}), S.RUNNING),
    Command.PAUSE: (frozenset({S.RUNNING}), S.PAUSED),
    Command.RESUME: (frozenset({S.PAUSED}), S.RUNNING),
    Command.CANCEL: (frozenset({S.DRAFT, S.SCHEDULED, S.RUNNING, S.PAUSED}), S.CANCELLED),
    # Contacts are removed from campaigns that are not sending: not started yet, or paused.
    Command.REMOVE: (frozenset({S.DRAFT, S.SCHEDULED, S.PAUSED}), None),
    # Failed contacts go back to the queue of a campaign that has run: see check_retry.
    Command.RETRY: (frozenset({S.RUNNING, S.PAUSED, S.COMPLETED}), None),
}


def _refuse_unless_allowed(command: Command, status: CampaignStatus) -> CampaignStatus | None:
    allowed, target = _RULES[command]
    if status not in allowed:
        names = ", ".join(sorted(s.value for s in allowed))
        raise CommandRefused(
            f"{command.value}_not_allowed",
            f"cannot {command.value} a {status.value} campaign (allowed when: {names})",
        )
    assert target is None or target in CAMPAIGN_TRANSITIONS[status]
    return target


def check_start(
    status: CampaignStatus,
    *,
    initial_contacts: int,
    template: str | None,
    at: datetime | None,
    now: datetime,
) -> CampaignStatus:
    """start: draft -> running now, or -> scheduled for a start time in the future."""
    _refuse_unless_allowed(Command.START, status)
    if not template:
        raise CommandRefused("no_template", "the campaign has no template configured")
    if initial_contacts < 1:
        raise CommandRefused("no_contacts", "the campaign has no contact in state initial")
    if at is not None:
        if at.tzinfo is None:
            raise CommandRefused("naive_time", "the start time needs a time zone (e.g. ...Z)")
        if at > now:
            return S.SCHEDULED
    return S.RUNNING


def check_pause(status: CampaignStatus) -> CampaignStatus:
    target = _refuse_unless_allowed(Command.PAUSE, status)
    assert target is not None
    return target


def check_resume(status: CampaignStatus) -> CampaignStatus:
    target = _refuse_unless_allowed(Command.RESUME, status)
    assert target is not None
    return target


def check_cancel(status: CampaignStatus) -> CampaignStatus:
    target = _refuse_unless_allowed(Command.CANCEL, status)
    assert target is not None
    return target


def check_remove(status: CampaignStatus) -> None:
    _refuse_unless_allowed(Command.REMOVE, status)


def check_retry(status: CampaignStatus) -> CampaignStatus | None:
    """retry: a paused or completed campaign runs again (the status it moves to); a running
    one stays running (None). Draft, scheduled and cancelled campaigns are refused."""
    _refuse_unless_allowed(Command.RETRY, status)
    if status is S.RUNNING:
        return None
    return campaign_transition(status, S.RUNNING)


def check_upload(status: CampaignStatus) -> None:
    if status not in (S.DRAFT, S.PAUSED):
        raise CommandRefused(
            "upload_not_allowed",
            f"the campaign is {status.value}: uploads are allowed only while it is draft or paused",
        )
