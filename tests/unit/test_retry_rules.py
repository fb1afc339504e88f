"""The retry's pure rules: its filters, which failed contact it queues or skips and why, and
the answer's counts and warning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.domain.dispatch import OUTCOME_UNKNOWN
from campaigns.domain.registry import PersonStatus, Standing
from campaigns.domain.retry import (
    INT4_MAX,
    MAX_FILTER_ITEMS,
    OUTCOME_UNKNOWN_PREFIX,
    SKIPS,
    FailedContact,
    InvalidRetryFilter,
    RetryFilter,
    Verdict,
    outcome_unknown,
    retry_filter,
    split_list,
    tally,
    verdict,
    warning,
)
from campaigns.domain.states import ContactState

C = ContactState
V = Verdict
UNKNOWN = OUTCOME_UNKNOWN_PREFIX + ": the worker stopped after the send started"


# --------------------------------------------------------------------------- filters


def test_no_filter_takes_both_failed_states_and_any_code() -> None:
    rule = retry_filter()
    assert rule == RetryFilter()
    assert rule.states == {C.ERROR, C.SENDING_FAILED}
    assert not rule.reason_codes and not rule.error_codes and not rule.include_unknown
    # Empty lists are "no narrowing" too (a console with no box ticked).
    assert retry_filter(states=[], reason_codes=[], error_codes=[]) == rule


def test_filters_as_given() -> None:
    rule = retry_filter(
        states=["sending_failed", " sending_failed"],
        reason_codes=["not_opted_in"],
        error_codes=[131049, "131047"],
        include_unknown=True,
    )
    assert rule.states == {C.SENDING_FAILED}
    assert rule.reason_codes == {"not_opted_in"}
    assert rule.error_codes == {131049, 131047}
    assert rule.include_unknown


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"states": ["delivered"]}, "'delivered' cannot be retried"),
        ({"states": ["retry_scheduled"]}, "cannot be retried"),
        ({"states": ["delivery_failed"]}, "error and/or sending_failed"),
        ({"states": [3]}, "cannot be retried"),
        ({"reason_codes": ["opted-out"]}, "known: blocked, not_on_whatsapp"),
        ({"reason_codes": [""]}, "not one a failed contact has"),
        ({"error_codes": ["abc"]}, "'abc' is not a number"),
        ({"error_codes": [True]}, "not a number"),
        ({"error_codes": [-1]}, "out of range"),
        ({"error_codes": [INT4_MAX + 1]}, "out of range"),
        ({"error_codes": ["12345678901"]}, "not a number"),
        ({"error_codes": list(range(MAX_FILTER_ITEMS + 1))}, f"at most {MAX_FILTER_ITEMS}"),
    ],
)
def test_a_bad_filter_is_refused(kw: dict[str, list[object]], words: str) -> None:
    with pytest.raises(InvalidRetryFilter) as refused:
        retry_filter(**kw)  # type: ignore[arg-type]
    assert refused.value.code == "invalid_retry_filter"
    assert refused.value.kind.value == "invalid"
    assert words in refused.value.message


def test_command_line_lists() -> None:
    assert split_list(["error,sending_failed"]) == ["error", "sending_failed"]
    assert split_list(["131049", " 131047 , ", ""]) == ["131049", "131047"]
    assert split_list([]) == []


# --------------------------------------------------------------------------- the rule


def test_outcome_unknown_is_an_error_with_that_reason() -> None:
    assert OUTCOME_UNKNOWN.startswith(OUTCOME_UNKNOWN_PREFIX)  # dispatch's own text
    assert outcome_unknown(FailedContact(C.ERROR, reason=UNKNOWN))
    assert not outcome_unknown(FailedContact(C.ERROR, reason="retries exhausted: 131000"))
    assert not outcome_unknown(FailedContact(C.ERROR))
    assert not outcome_unknown(FailedContact(C.SENDING_FAILED, reason=UNKNOWN))


OPTED_OUT = Standing(opted_out=True)
BLOCKED = Standing(PersonStatus.BLOCKED, opted_out=True)
UNAVAILABLE = Standing(PersonStatus.UNAVAILABLE, opted_in=True)
EVERYONE = RetryFilter(include_unknown=True)


@pytest.mark.parametrize(
    ("contact", "rule", "expected"),
    [
        (FailedContact(C.ERROR, error_code=131047), RetryFilter(), V.QUEUED),
        (FailedContact(C.SENDING_FAILED, error_code=131049), RetryFilter(), V.QUEUED),
        # The person decides first, whatever the filters (blocked before opted out).
        (FailedContact(C.SENDING_FAILED, person=OPTED_OUT), EVERYONE, V.OPTED_OUT),
        (FailedContact(C.ERROR, person=BLOCKED), EVERYONE, V.BLOCKED),
        (FailedContact(C.SENDING_FAILED, person=UNAVAILABLE), EVERYONE, V.UNAVAILABLE),
        (FailedContact(C.ERROR, reason=UNKNOWN, person=OPTED_OUT), EVERYONE, V.OPTED_OUT),
        # A contact refused as opted out whose person opted in since is retried.
        (FailedContact(C.SENDING_FAILED, reason_code="opted_out"), RetryFilter(), V.QUEUED),
        # not_opted_in is no reason to skip: the send-time check applies it again.
        (FailedContact(C.SENDING_FAILED, reason_code="not_opted_in"), RetryFilter(), V.QUEUED),
        (FailedContact(C.ERROR, reason=UNKNOWN), RetryFilter(), V.OUTCOME_UNKNOWN),
        (FailedContact(C.ERROR, reason=UNKNOWN), EVERYONE, V.QUEUED),
        # Filters: state, reason code, error code; not matched is not counted at all.
        (FailedContact(C.ERROR), RetryFilter(states=frozenset({C.SENDING_FAILED})), None),
        (FailedContact(C.DELIVERY_FAILED), EVERYONE, None),
        (FailedContact(C.SENT), EVERYONE, None),
        (
            FailedContact(C.SENDING_FAILED, reason_code="not_on_whatsapp"),
            RetryFilter(reason_codes=frozenset({"not_opted_in"})),
            None,
        ),
        (FailedContact(C.SENDING_FAILED), RetryFilter(reason_codes=frozenset({"x"})), None),
        (
            FailedContact(C.ERROR, error_code=131047),
            RetryFilter(error_codes=frozenset({131049})),
            None,
        ),
        (
            FailedContact(C.ERROR, reason=UNKNOWN),
            RetryFilter(error_codes=frozenset({131049})),
            None,
        ),
        (
            FailedContact(C.SENDING_FAILED, error_code=131049, person=OPTED_OUT),
            RetryFilter(error_codes=frozenset({131049})),
            V.OPTED_OUT,
        ),
    ],
)
def test_what_a_retry_does_with_a_contact(
    contact: FailedContact, rule: RetryFilter, expected: Verdict | None
) -> None:
    assert verdict(contact, rule) is expected


people = st.builds(
    Standing,
    st.sampled_from([None, *PersonStatus]),
    st.booleans(),
    st.booleans(),
)
contacts = st.builds(
    FailedContact,
    st.sampled_from(list(C)),
    st.sampled_from([None, UNKNOWN, "retries exhausted: 131000"]),
    st.sampled_from([None, "opted_out", "not_opted_in"]),
    st.sampled_from([None, 131049, 131047]),
    people,
)
rules = st.builds(
    RetryFilter,
    st.sets(st.sampled_from([C.ERROR, C.SENDING_FAILED]), min_size=1).map(frozenset),
    st.sets(st.sampled_from(["opted_out", "not_opted_in"])).map(frozenset),
    st.sets(st.sampled_from([131049, 131047])).map(frozenset),
    st.booleans(),
)


@given(contacts, rules)
def test_no_refused_person_and_no_unasked_unknown_is_ever_queued(
    contact: FailedContact, rule: RetryFilter
) -> None:
    outcome = verdict(contact, rule)
    if outcome is Verdict.QUEUED:
        assert contact.state in rule.states
        assert contact.person.status is None and not contact.person.opted_out
        assert rule.include_unknown or not outcome_unknown(contact)
    if contact.state not in (C.ERROR, C.SENDING_FAILED):
        assert outcome is None


# --------------------------------------------------------------------------- the answer


def test_tally_and_warning() -> None:
    counts = tally(
        [
            (C.ERROR, V.QUEUED, False, 2),
            (C.ERROR, V.QUEUED, True, 3),
            (C.SENDING_FAILED, V.QUEUED, False, 4),
            (C.SENDING_FAILED, V.OPTED_OUT, False, 1),
            (C.ERROR, V.OPTED_OUT, True, 1),
            (C.SENDING_FAILED, V.UNAVAILABLE, False, 5),
            (C.ERROR, V.OUTCOME_UNKNOWN, True, 6),
        ]
    )
    assert counts.queued == {C.ERROR: 5, C.SENDING_FAILED: 4}
    assert counts.total == 9
    assert counts.skipped == {V.OPTED_OUT: 2, V.UNAVAILABLE: 5, V.BLOCKED: 0, V.OUTCOME_UNKNOWN: 6}
    assert counts.unknown_queued == 3
    text = warning(counts)
    assert text is not None and text.startswith("3 queued contacts had an unknown outcome")
    assert "may already have delivered" in text


def test_an_empty_tally_has_every_key_and_no_warning() -> None:
    counts = tally([])
    assert counts.queued == {C.ERROR: 0, C.SENDING_FAILED: 0} and counts.total == 0
    assert counts.skipped == dict.fromkeys(SKIPS, 0)
    assert [v.value for v in SKIPS] == ["opted_out", "unavailable", "blocked", "outcome_unknown"]
    assert warning(counts) is None
    one = tally([(C.ERROR, V.QUEUED, True, 1)])
    assert (warning(one) or "").startswith("1 queued contact had")
