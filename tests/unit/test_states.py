from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.domain.states import (
    CAMPAIGN_TRANSITIONS,
    CONTACT_TRANSITIONS,
    PENDING_CONTACT_STATES,
    RETRYABLE_CONTACT_STATES,
    TERMINAL_CONTACT_STATES,
    CampaignStatus,
    ContactState,
    IllegalTransition,
    campaign_transition,
    contact_sources,
    contact_transition,
)

C = ContactState
S = CampaignStatus


@given(st.sampled_from(list(C)), st.sampled_from(list(C)))
def test_contact_transition_follows_the_table(current: ContactState, target: ContactState) -> None:
    if target in CONTACT_TRANSITIONS[current]:
        assert contact_transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition) as info:
            contact_transition(current, target)
        assert (info.value.current, info.value.target) == (current, target)


@given(st.sampled_from(list(S)), st.sampled_from(list(S)))
def test_campaign_transition_follows_the_table(
    current: CampaignStatus, target: CampaignStatus
) -> None:
    if target in CAMPAIGN_TRANSITIONS[current]:
        assert campaign_transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition):
            campaign_transition(current, target)


@given(st.sampled_from(list(C)))
def test_sources_are_the_inverse_of_the_table(target: ContactState) -> None:
    for source in C:
        assert (source in contact_sources(target)) == (target in CONTACT_TRANSITIONS[source])


def test_every_state_has_a_row_and_a_label() -> None:
    assert set(CONTACT_TRANSITIONS) == set(C)
    assert set(CAMPAIGN_TRANSITIONS) == set(S)
    assert C.CANCELED_BY_ADMIN.label == "Canceled by admin"
    assert {s.label for s in C} >= {"Initial", "Invalid record", "Retry scheduled", "Read"}


def test_terminal_and_pending_sets() -> None:
    assert {
        C.INVALID_RECORD,
        C.READ,
        C.DELIVERY_FAILED,
        C.SENDING_FAILED,
        C.ERROR,
        C.REMOVED,
        C.CANCELED_BY_ADMIN,
    } == TERMINAL_CONTACT_STATES
    assert PENDING_CONTACT_STATES.isdisjoint(TERMINAL_CONTACT_STATES)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (C.READ, C.DELIVERED),  # webhooks only move forward
        (C.DELIVERED, C.DELIVERY_FAILED),  # failed applies only before Delivered
        (C.SENT, C.IN_PROGRESS),  # never a blind re-send
        (C.INVALID_RECORD, C.INITIAL),
        (C.SENT, C.REMOVED),
    ],
)
def test_forbidden_paths_of_the_design(current: ContactState, target: ContactState) -> None:
    with pytest.raises(IllegalTransition):
        contact_transition(current, target)


def test_webhook_order_is_monotonic() -> None:
    assert C.DELIVERED in CONTACT_TRANSITIONS[C.SENT]
    assert C.READ in CONTACT_TRANSITIONS[C.DELIVERED]
    assert CONTACT_TRANSITIONS[C.READ] == frozenset()


def test_only_an_operators_retry_leaves_error_and_sending_failed() -> None:
    assert contact_transition(C.ERROR, C.RETRY_SCHEDULED) is C.RETRY_SCHEDULED
    assert contact_transition(C.SENDING_FAILED, C.RETRY_SCHEDULED) is C.RETRY_SCHEDULED
    assert {C.ERROR, C.SENDING_FAILED} == RETRYABLE_CONTACT_STATES
    for state in RETRYABLE_CONTACT_STATES:
        assert CONTACT_TRANSITIONS[state] == {C.RETRY_SCHEDULED}
    # Nothing else that has ended comes back: a delivery failure was a message the platform
    # took, a removed or cancelled contact was an operator's decision.
    assert contact_sources(C.RETRY_SCHEDULED) == {C.IN_PROGRESS, C.ERROR, C.SENDING_FAILED}
    assert RETRYABLE_CONTACT_STATES <= TERMINAL_CONTACT_STATES  # final for dispatch, webhooks


@pytest.mark.parametrize(
    "target", [C.SENT, C.DELIVERED, C.READ, C.DELIVERY_FAILED, C.IN_PROGRESS, C.INITIAL]
)
@pytest.mark.parametrize("failed", [C.ERROR, C.SENDING_FAILED])
def test_a_failed_contact_goes_nowhere_but_retry_scheduled(
    failed: ContactState, target: ContactState
) -> None:
    with pytest.raises(IllegalTransition):
        contact_transition(failed, target)


def test_a_completed_campaign_may_run_again_and_nothing_else() -> None:
    assert campaign_transition(S.COMPLETED, S.RUNNING) is S.RUNNING
    assert CAMPAIGN_TRANSITIONS[S.COMPLETED] == {S.RUNNING}
    assert CAMPAIGN_TRANSITIONS[S.CANCELLED] == frozenset()
    for target in (S.PAUSED, S.CANCELLED, S.DRAFT, S.SCHEDULED):
        with pytest.raises(IllegalTransition):
            campaign_transition(S.COMPLETED, target)
