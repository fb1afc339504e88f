"""The webhook rules: forward only, late statuses fill timestamps, order does not matter."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.domain.states import CONTACT_TRANSITIONS, ContactState
from campaigns.domain.webhooks import (
    PROGRESS_RANK,
    WEBHOOK_SETTLED_STATES,
    Decision,
    Delivery,
    Effect,
    StatusEvent,
    StatusKind,
    decide,
    give_up_retry,
    is_opt_out,
    opt_out_numbers,
    opt_out_words,
    retry_delay_s,
    settle,
    status_time,
)

C = ContactState
K = StatusKind
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def event(kind: StatusKind, second: int = 0, code: int | None = None) -> StatusEvent:
    detail = f"error {code}" if code is not None else None
    return StatusEvent(kind, T0 + timedelta(seconds=second), code, detail)


# --------------------------------------------------------------------------- single statuses


@pytest.mark.parametrize(
    ("current", "kind", "expected"),
    [
        (C.SENT, K.DELIVERED, Decision(C.DELIVERED, "delivered_at")),
        (C.SENT, K.READ, Decision(C.READ, "read_at")),
        (C.SENT, K.FAILED, Decision(C.DELIVERY_FAILED, "failed_at")),
        (C.SENT, K.SENT, Decision(None, "sent_at")),
        (C.DELIVERED, K.READ, Decision(C.READ, "read_at")),
        (C.DELIVERED, K.FAILED, Decision(None, None)),  # failed only before Delivered
        (C.DELIVERED, K.SENT, Decision(None, "sent_at")),
        (C.READ, K.DELIVERED, Decision(None, "delivered_at")),  # late: timestamp only
        (C.READ, K.FAILED, Decision(None, None)),
        (C.DELIVERY_FAILED, K.SENT, Decision(None, "sent_at")),
        (C.DELIVERY_FAILED, K.DELIVERED, Decision(None, "delivered_at")),
        (C.IN_PROGRESS, K.SENT, Decision(C.SENT, "sent_at")),
        (C.IN_PROGRESS, K.READ, Decision(C.READ, "read_at")),
        (C.IN_PROGRESS, K.FAILED, Decision(C.DELIVERY_FAILED, "failed_at")),
        (C.ERROR, K.DELIVERED, Decision(None, None)),
        (C.REMOVED, K.SENT, Decision(None, None)),
        (C.RETRY_SCHEDULED, K.SENT, Decision(C.SENT, "sent_at")),
        (C.RETRY_SCHEDULED, K.DELIVERED, Decision(C.DELIVERED, "delivered_at")),
        (C.RETRY_SCHEDULED, K.FAILED, Decision(C.DELIVERY_FAILED, "failed_at")),
        (C.SENT, K.OTHER, Decision(None, None)),
    ],
)
def test_decide(current: ContactState, kind: StatusKind, expected: Decision) -> None:
    assert decide(current, kind) == expected


def test_status_kind_parse_tolerates_unknown_values() -> None:
    assert K.parse("delivered") is K.DELIVERED
    assert K.parse(" READ ") is K.READ
    assert K.parse("deleted") is K.OTHER
    assert K.parse("") is K.OTHER


def test_failed_stores_the_error_and_late_statuses_only_fill_empty_timestamps() -> None:
    failed, steps = settle(Delivery(C.SENT, sent_at=T0), [event(K.FAILED, 5, 131049)])
    assert failed.state is C.DELIVERY_FAILED
    assert (failed.error_code, failed.error_detail) == (131049, "error 131049")
    assert failed.failed_at == T0 + timedelta(seconds=5)
    assert [s.effect for s in steps] == [Effect.MOVED]

    read = Delivery(C.READ, sent_at=T0, read_at=T0 + timedelta(seconds=9))
    after, steps = settle(read, [event(K.DELIVERED, 4), event(K.SENT, 1), event(K.READ, 30)])
    assert after.state is C.READ
    assert after.delivered_at == T0 + timedelta(seconds=4)
    assert after.sent_at == T0  # already set: kept
    assert after.read_at == T0 + timedelta(seconds=9)  # duplicate read: kept
    assert sorted(s.effect for s in steps) == sorted([Effect.FILLED, Effect.LATE, Effect.LATE])


def test_failed_after_delivered_changes_nothing() -> None:
    delivered = Delivery(C.DELIVERED, sent_at=T0, delivered_at=T0)
    after, steps = settle(delivered, [event(K.FAILED, 3, 131026)])
    assert after == delivered
    assert steps[0].effect is Effect.LATE


@pytest.mark.parametrize(
    "state",
    [C.ERROR, C.REMOVED, C.CANCELED_BY_ADMIN, C.SENDING_FAILED, C.INITIAL],
)
def test_states_no_webhook_settles_stay_as_they_are(state: ContactState) -> None:
    before = Delivery(state)
    after, steps = settle(before, [event(k, i) for i, k in enumerate(StatusKind)])
    assert after == before
    assert {s.effect for s in steps} <= {Effect.LATE, Effect.IGNORED}


def test_steps_follow_the_logical_order_for_a_readable_event_log() -> None:
    _, steps = settle(
        Delivery(C.IN_PROGRESS), [event(K.READ, 3), event(K.SENT, 1), event(K.DELIVERED, 2)]
    )
    moves = [(s.from_state, s.to_state) for s in steps if s.effect is Effect.MOVED]
    assert moves == [(C.IN_PROGRESS, C.SENT), (C.SENT, C.DELIVERED), (C.DELIVERED, C.READ)]


# --------------------------------------------------------------------------- properties

# What the platform sends for one message: some of sent/delivered/read, or sent then failed.
LIFECYCLES = st.one_of(
    st.sets(st.sampled_from([K.SENT, K.DELIVERED, K.READ]), min_size=1),
    st.sets(st.sampled_from([K.SENT, K.FAILED]), min_size=1),
)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[Delivery, list[StatusEvent]]:
    """A contact the platform accepted and one message's statuses, each with its own time."""
    start = draw(st.sampled_from([C.IN_PROGRESS, C.RETRY_SCHEDULED, C.SENT]))
    kinds = sorted(draw(LIFECYCLES), key=list(K).index)
    times = sorted(draw(st.lists(st.integers(0, 10_000), min_size=len(kinds), max_size=9)))
    events = [
        event(kind, second, 131049 if kind is K.FAILED else None)
        for kind, second in zip(kinds, times, strict=False)
    ]
    sent_at = T0 if start is C.SENT and draw(st.booleans()) else None
    return Delivery(start, sent_at=sent_at), events


@given(deliveries(), st.data())
def test_any_order_and_duplication_ends_in_the_same_result(
    case: tuple[Delivery, list[StatusEvent]], data: st.DataObject
) -> None:
    start, events = case
    expected, _ = settle(start, events)
    # Every status arrives at least once, some several times, in any order.
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=3 * len(events)))
    arrivals = data.draw(st.permutations(events + duplicates))
    # One by one, as separate batches arriving in this order...
    one_by_one = start
    for arrival in arrivals:
        one_by_one, _ = settle(one_by_one, [arrival])
    # ...or all in one batch: the same state, the same timestamps, the same error.
    together, _ = settle(start, arrivals)
    assert one_by_one == expected
    assert together == expected
    rank = {K.SENT: C.SENT, K.DELIVERED: C.DELIVERED, K.READ: C.READ, K.FAILED: C.DELIVERY_FAILED}
    assert expected.state is max((rank[e.kind] for e in events), key=PROGRESS_RANK.__getitem__)
    for e in events:
        column = {K.SENT: "sent_at", K.DELIVERED: "delivered_at", K.READ: "read_at"}.get(e.kind)
        if column and getattr(start, column) is None:
            assert getattr(expected, column) == e.at


ANY_EVENT = st.builds(
    StatusEvent,
    kind=st.sampled_from(list(K)),
    at=st.integers(0, 1000).map(lambda s: T0 + timedelta(seconds=s)),
    error_code=st.none() | st.integers(1, 200_000),
)


@given(st.sampled_from(list(C)), st.lists(ANY_EVENT, max_size=12))
def test_never_backwards_never_outside_the_table(
    state: ContactState, events: list[StatusEvent]
) -> None:
    """Whatever arrives (even a contradictory mix), every move is legal and forward."""
    delivery = Delivery(state)
    for incoming in events:
        before = delivery
        delivery, steps = settle(delivery, [incoming])
        step = steps[0]
        if step.effect is Effect.MOVED:
            assert step.to_state in CONTACT_TRANSITIONS[step.from_state]
            assert PROGRESS_RANK[step.to_state] > PROGRESS_RANK[step.from_state]
        else:
            assert delivery.state is before.state
        for column in ("sent_at", "delivered_at", "read_at", "failed_at"):
            if getattr(before, column) is not None:  # a set timestamp is never overwritten
                assert getattr(delivery, column) == getattr(before, column)
        if state not in WEBHOOK_SETTLED_STATES | {C.IN_PROGRESS, C.RETRY_SCHEDULED}:
            assert delivery == Delivery(state)


# --------------------------------------------------------------------------- helpers


def test_status_time() -> None:
    assert status_time("1732700000", T0) == datetime(2024, 11, 27, 9, 33, 20, tzinfo=UTC)
    assert status_time("not a time", T0) == T0
    assert status_time(None, T0) == T0
    assert status_time("9" * 30, T0) == T0


def test_retry_backoff_and_bound() -> None:
    assert [retry_delay_s(t, base_s=1.0, cap_s=10.0) for t in (1, 2, 3, 4, 5)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
    ]
    assert not give_up_retry(9, 100.0, max_tries=10, max_age_s=3600)
    assert give_up_retry(10, 100.0, max_tries=10, max_age_s=3600)
    assert give_up_retry(2, 3600.0, max_tries=10, max_age_s=3600)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", True),
        ("stop", True),
        ("  Stop!  ", True),
        ("unsubscribe", True),
        ("UNSUBSCRIBE.", True),
        ("\tSTOP\n", True),
        ("stop sending me offers", False),
        ("STOPP", False),
        ("", False),
        (None, False),
        ("Yes", False),
    ],
)
def test_opt_out_default_words(text: str | None, expected: bool) -> None:
    assert is_opt_out(text) is expected


def test_opt_out_configured_words() -> None:
    words = opt_out_words("Stop all, ABMELDEN ,,")
    assert words == frozenset({"stop all", "abmelden"})
    assert is_opt_out("STOP   ALL", words)
    assert is_opt_out("abmelden", words)
    assert not is_opt_out("stop", words)
    assert is_opt_out("Abmelden", ["ABMELDEN"])


@given(st.text(alphabet=string.ascii_letters + " .!", max_size=20))
def test_opt_out_ignores_case_and_spacing(word: str) -> None:
    words = opt_out_words([word])
    if not words:
        return
    (normal,) = words
    assert is_opt_out(f"  {normal.upper()}  ", words) == is_opt_out(normal, words)


@pytest.mark.parametrize(
    ("wa_id", "numbers"),
    [
        ("4915123456789", {"+4915123456789"}),
        ("5215512345678", {"+5215512345678", "+525512345678"}),  # Mexico, legacy 1
        ("525512345678", {"+525512345678", "+5215512345678"}),
        ("551191234567", {"+551191234567", "+5511991234567"}),  # Brazil mobile without its 9
        ("5511991234567", {"+5511991234567", "+551191234567"}),
        ("551131234567", {"+551131234567"}),  # Brazil landline: no 9 to add
        ("5491123456789", {"+5491123456789", "+541123456789"}),  # Argentina
        ("", set()),
    ],
)
def test_opt_out_numbers_cover_the_wa_id_quirks(wa_id: str, numbers: set[str]) -> None:
    assert opt_out_numbers(wa_id) == numbers
