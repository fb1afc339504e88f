from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.domain import admin as admin_rules
from campaigns.domain.admin import CommandRefused
from campaigns.domain.states import CAMPAIGN_TRANSITIONS, CampaignStatus

S = CampaignStatus
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def start(status: CampaignStatus, **kw: object) -> CampaignStatus:
    args: dict[str, object] = {
        "initial_contacts": 10,
        "template": "bf_offer",
        "at": None,
        "now": NOW,
    }
    args.update(kw)
    return admin_rules.check_start(status, **args)  # type: ignore[arg-type]


def test_start_now_and_scheduled() -> None:
    assert start(S.DRAFT) is S.RUNNING
    assert start(S.DRAFT, at=NOW + timedelta(hours=1)) is S.SCHEDULED
    assert start(S.DRAFT, at=NOW - timedelta(hours=1)) is S.RUNNING


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"template": None}, "no_template"),
        ({"initial_contacts": 0}, "no_contacts"),
        ({"at": datetime(2026, 12, 1, 9, 0)}, "naive_time"),
    ],
)
def test_start_preconditions(kw: dict[str, object], code: str) -> None:
    with pytest.raises(CommandRefused) as refused:
        start(S.DRAFT, **kw)
    assert refused.value.code == code


@given(st.sampled_from(list(S)))
def test_each_command_is_legal_exactly_where_the_rules_say(status: CampaignStatus) -> None:
    cases = {
        "pause": (admin_rules.check_pause, {S.RUNNING}),
        "resume": (admin_rules.check_resume, {S.PAUSED}),
        "cancel": (admin_rules.check_cancel, {S.DRAFT, S.SCHEDULED, S.RUNNING, S.PAUSED}),
        "remove": (admin_rules.check_remove, {S.DRAFT, S.SCHEDULED, S.PAUSED}),
        "start": (start, {S.DRAFT}),
        "upload": (admin_rules.check_upload, {S.DRAFT, S.PAUSED}),
        "retry": (admin_rules.check_retry, {S.RUNNING, S.PAUSED, S.COMPLETED}),
    }
    for name, (check, allowed) in cases.items():
        if status in allowed:
            target = check(status)
            if target is not None:  # every target is a legal lifecycle step
                assert target in CAMPAIGN_TRANSITIONS[status], name
        else:
            with pytest.raises(CommandRefused) as refused:
                check(status)
            assert status.value in refused.value.message, name


@pytest.mark.parametrize(
    ("status", "target"),
    [(S.COMPLETED, S.RUNNING), (S.PAUSED, S.RUNNING), (S.RUNNING, None)],
)
def test_retry_runs_the_campaign_again(
    status: CampaignStatus, target: CampaignStatus | None
) -> None:
    assert admin_rules.check_retry(status) is target


@pytest.mark.parametrize("status", [S.DRAFT, S.SCHEDULED, S.CANCELLED])
def test_retry_is_refused_before_a_start_and_after_a_cancel(status: CampaignStatus) -> None:
    with pytest.raises(CommandRefused) as refused:
        admin_rules.check_retry(status)
    assert refused.value.code == "retry_not_allowed"
    assert refused.value.kind.value == "conflict"
