"""What a recorded batch does to a running campaign's wait (``reason_after_batch``), pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from campaigns.domain.dispatch import reason_after_batch, tier_reason, window_reason

FREE_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()
TIER_WAIT = tier_reason(4, 7200.0, FREE_AT - 60)
WINDOW_WAIT = window_reason(datetime(2026, 11, 23, 8, 0, tzinfo=UTC))


def after(
    current: str | None,
    *,
    sent: bool = True,
    tier_limit: int = 0,
    tier_free_at: float | None = None,
    windowed: bool = False,
) -> str | None:
    return reason_after_batch(
        current,
        sent=sent,
        tier_limit=tier_limit,
        tier_window_s=7200.0,
        tier_free_at=tier_free_at,
        windowed=windowed,
    )


def test_a_batch_the_tier_cut_short_shows_the_tiers_wait() -> None:
    expected = "waiting for the messaging tier: 4 unique recipients per 2 h, next slot at "
    for current in (None, TIER_WAIT, "something else"):
        reason = after(current, tier_limit=4, tier_free_at=FREE_AT)
        assert reason == tier_reason(4, 7200.0, FREE_AT)
        assert reason.startswith(expected + "2026-11-23T12:00:00+00:00")


@pytest.mark.parametrize(
    ("current", "sent", "tier_limit", "windowed", "expected"),
    [
        (TIER_WAIT, True, 4, False, None),  # sending again: the tier's wait clears
        (TIER_WAIT, False, 4, False, TIER_WAIT),  # nothing sent: still waiting
        (TIER_WAIT, True, 0, False, TIER_WAIT),  # no limit (any more): left alone
        (WINDOW_WAIT, True, 0, True, None),  # a window opened: sending again
        (WINDOW_WAIT, False, 0, True, WINDOW_WAIT),
        (WINDOW_WAIT, True, 0, False, WINDOW_WAIT),  # no window: not dispatch's wait
        ("paused by admin", True, 4, True, "paused by admin"),  # not a wait: kept
        (None, True, 4, True, None),
    ],
)
def test_a_batch_that_sent_clears_only_a_wait(
    current: str | None, sent: bool, tier_limit: int, windowed: bool, expected: str | None
) -> None:
    assert after(current, sent=sent, tier_limit=tier_limit, windowed=windowed) == expected
