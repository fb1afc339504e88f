"""Pure dispatch rules: what recorded outcomes do to a running campaign's wait
(``reason_after_batch``), the senders' fair shares (``fair_rates``) and the answer streaks
that pause a campaign (``AnswerStreak``)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.domain.dispatch import (
    AnswerStreak,
    fair_rates,
    reason_after_batch,
    tier_reason,
    window_reason,
)
from campaigns.domain.outcomes import Decision, SendResult, TransportFailure, classify

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


# --------------------------------------------------------------------------- fair shares


def test_campaigns_keep_their_rates_while_the_sender_carries_them() -> None:
    running = [(1, "a", 50.0), (2, "a", 500.0), (3, "b", 1000.0)]
    assert fair_rates(running, 1000.0) == {1: 50.0, 2: 500.0, 3: 1000.0}


def test_a_sender_asked_for_more_than_it_carries_shares_in_proportion() -> None:
    running = [(1, "a", 1000.0), (2, "a", 500.0), (3, "a", 500.0), (4, "b", 80.0)]
    rates = fair_rates(running, 1000.0)
    assert rates == {1: 500.0, 2: 250.0, 3: 250.0, 4: 80.0}
    assert sum(r for c, r in rates.items() if c != 4) == pytest.approx(1000.0)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0.5, 1000.0)), max_size=60))
def test_no_sender_ever_passes_its_limit(asks: list[tuple[str, float]]) -> None:
    running = [(i, sender, rate) for i, (sender, rate) in enumerate(asks)]
    rates = fair_rates(running, 1000.0)
    for sender in "abc":
        mine = [i for i, s, _ in running if s == sender]
        assert sum(rates[i] for i in mine) <= 1000.0 * (1 + 1e-9)
    for i, _, rate in running:
        assert 0 < rates[i] <= rate


# --------------------------------------------------------------------------- streaks

UNKNOWN = SendResult(http_status=400, error_code=987654, error_title="Weird", error_details="x")
PARAM = SendResult(http_status=400, error_code=132012, error_title="Parameter format")
SENT = SendResult(http_status=200, wamid="wamid.1")


def answer(result: SendResult) -> tuple[Decision, SendResult]:
    return classify(result, 1, 5, random.Random(1)), result


def test_unknown_errors_in_a_row_pause_and_any_other_answer_resets() -> None:
    streak = AnswerStreak()
    for _ in range(4):
        assert streak.note(*answer(UNKNOWN), pause_after=5) is None
    assert streak.note(*answer(SENT), pause_after=5) is None
    for _ in range(4):
        assert streak.note(*answer(UNKNOWN), pause_after=5) is None
    reason = streak.note(*answer(UNKNOWN), pause_after=5)
    assert reason is not None and "unknown error 987654" in reason and "Weird" in reason


def test_parameter_problems_pause_only_while_nothing_else_came_back() -> None:
    only = AnswerStreak()
    reasons = [only.note(*answer(PARAM), pause_after=3) for _ in range(3)]
    assert reasons[:2] == [None, None]
    assert reasons[2] is not None and "132012" in reasons[2]
    mixed = AnswerStreak()
    mixed.note(*answer(SENT), pause_after=3)
    assert all(mixed.note(*answer(PARAM), pause_after=3) is None for _ in range(10))


def test_an_answer_that_never_came_counts_for_no_streak() -> None:
    streak = AnswerStreak()
    timeout = SendResult(transport=TransportFailure.AFTER_SEND)
    for _ in range(10):
        assert streak.note(*answer(timeout), pause_after=2) is None
    assert streak.answers == 0 and streak.unknown == 0
