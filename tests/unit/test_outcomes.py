"""Every row of the provider-notes error table, the HTTP/transport fallbacks and backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.domain.outcomes import (
    ERROR_CLASSES,
    PERMISSION_RANGE,
    SETTLE_FLOOR_S,
    Decision,
    ErrorFamily,
    OutcomeKind,
    SendResult,
    TransportFailure,
    backoff_seconds,
    classify,
    meaning_of,
)

RETRY, FAILED, ERROR = OutcomeKind.RETRY, OutcomeKind.SENDING_FAILED, OutcomeKind.ERROR


def _error(code: int, status: int = 400, details: str | None = "some details") -> SendResult:
    return SendResult(
        http_status=status,
        error_code=code,
        error_subcode=2494010,
        error_title=f"(#{code}) title",
        error_details=details,
    )


def _classify(result: SendResult, attempt_no: int = 1, max_attempts: int = 5) -> Decision:
    return classify(result, attempt_no, max_attempts, random.Random(7))


F = ErrorFamily
RATE, TRANSIENT, RECIPIENT = F.RATE_LIMIT, F.TRANSIENT, F.RECIPIENT
ACCOUNT, TEMPLATE, PARAMETER, MESSAGE = F.ACCOUNT, F.TEMPLATE, F.PARAMETER, F.MESSAGE

# Meta's error-code reference, code by code, as dispatch must treat each.
# code, kind, pause_campaign, slow_down, opted_out, minimum retry delay (s), family
TABLE: list[tuple[int, OutcomeKind, bool, bool, bool, float, ErrorFamily]] = [
    (130429, RETRY, False, True, False, 1.0, RATE),
    (131056, RETRY, False, False, False, 60.0, RATE),
    (80007, RETRY, False, True, False, 60.0, RATE),
    (4, RETRY, False, True, False, 60.0, RATE),
    (613, RETRY, False, True, False, 60.0, RATE),
    (131000, RETRY, False, False, False, SETTLE_FLOOR_S, TRANSIENT),
    (1, RETRY, False, False, False, SETTLE_FLOOR_S, TRANSIENT),
    (2, RETRY, False, False, False, SETTLE_FLOOR_S, TRANSIENT),
    (131016, RETRY, False, False, False, SETTLE_FLOOR_S, TRANSIENT),
    (133004, RETRY, False, False, False, SETTLE_FLOOR_S, TRANSIENT),
    # Per-recipient final codes: Sending failed, the campaign goes on.
    (131026, FAILED, False, False, False, 0.0, RECIPIENT),
    (1013, FAILED, False, False, False, 0.0, RECIPIENT),
    (131049, FAILED, False, False, False, 0.0, RECIPIENT),
    (131050, FAILED, False, False, True, 0.0, RECIPIENT),
    (130472, FAILED, False, False, False, 0.0, RECIPIENT),
    (130497, FAILED, False, False, False, 0.0, RECIPIENT),
    (131021, FAILED, False, False, False, 0.0, RECIPIENT),
    (131030, FAILED, False, False, False, 0.0, RECIPIENT),
    # Parameter problems: Error for the contact (dispatch pauses when all fail so).
    (132000, ERROR, False, False, False, 0.0, PARAMETER),
    (132008, ERROR, False, False, False, 0.0, PARAMETER),
    (132012, ERROR, False, False, False, 0.0, PARAMETER),
    (132018, ERROR, False, False, False, 0.0, PARAMETER),
    (131008, ERROR, False, False, False, 0.0, PARAMETER),
    (131009, ERROR, False, False, False, 0.0, PARAMETER),
    (100, ERROR, False, False, False, 0.0, PARAMETER),
    (135000, ERROR, False, False, False, 0.0, PARAMETER),
    # Wrong for this message only.
    (131047, ERROR, False, False, False, 0.0, MESSAGE),
    (470, ERROR, False, False, False, 0.0, MESSAGE),
    (131051, ERROR, False, False, False, 0.0, MESSAGE),
    (131052, ERROR, False, False, False, 0.0, MESSAGE),
    (131053, ERROR, False, False, False, 0.0, MESSAGE),
    # The template cannot be sent: pause.
    (132001, ERROR, True, False, False, 0.0, TEMPLATE),
    (132005, ERROR, True, False, False, 0.0, TEMPLATE),
    (132007, ERROR, True, False, False, 0.0, TEMPLATE),
    (132015, ERROR, True, False, False, 0.0, TEMPLATE),
    (132016, ERROR, True, False, False, 0.0, TEMPLATE),
    (132068, ERROR, True, False, False, 0.0, TEMPLATE),
    (132069, ERROR, True, False, False, 0.0, TEMPLATE),
    # Account, payment, permission, token, sender number: pause at once.
    (0, ERROR, True, False, False, 0.0, ACCOUNT),
    (3, ERROR, True, False, False, 0.0, ACCOUNT),
    (10, ERROR, True, False, False, 0.0, ACCOUNT),
    (190, ERROR, True, False, False, 0.0, ACCOUNT),
    (33, ERROR, True, False, False, 0.0, ACCOUNT),
    (368, ERROR, True, False, False, 0.0, ACCOUNT),
    (131005, ERROR, True, False, False, 0.0, ACCOUNT),
    (131031, ERROR, True, False, False, 0.0, ACCOUNT),
    (131037, ERROR, True, False, False, 0.0, ACCOUNT),
    (131042, ERROR, True, False, False, 0.0, ACCOUNT),
    (131045, ERROR, True, False, False, 0.0, ACCOUNT),
    (131048, ERROR, True, False, False, 0.0, ACCOUNT),
    (131057, ERROR, True, False, False, 0.0, ACCOUNT),
    (133000, ERROR, True, False, False, 0.0, ACCOUNT),
    (133005, ERROR, True, False, False, 0.0, ACCOUNT),
    (133006, ERROR, True, False, False, 0.0, ACCOUNT),
    (133008, ERROR, True, False, False, 0.0, ACCOUNT),
    (133009, ERROR, True, False, False, 0.0, ACCOUNT),
    (133010, ERROR, True, False, False, 0.0, ACCOUNT),
    (133015, ERROR, True, False, False, 0.0, ACCOUNT),
    (133016, ERROR, True, False, False, 0.0, ACCOUNT),
    # 200-299 is one class in the reference ("API Permission"): its ends and a middle.
    (200, ERROR, True, False, False, 0.0, ACCOUNT),
    (250, ERROR, True, False, False, 0.0, ACCOUNT),
    (299, ERROR, True, False, False, 0.0, ACCOUNT),
]


def test_table_covers_every_documented_code() -> None:
    assert {row[0] for row in TABLE} | set(PERMISSION_RANGE) == set(ERROR_CLASSES)


def test_permission_range_is_exactly_200_to_299() -> None:
    assert 199 not in ERROR_CLASSES and 300 not in ERROR_CLASSES
    assert all(ERROR_CLASSES[code].family is ACCOUNT for code in range(200, 300))
    assert _classify(_error(300)).unknown_error


@pytest.mark.parametrize(
    ("code", "kind", "pause", "slow", "opted_out", "min_delay", "family"), TABLE
)
def test_error_table_row(
    code: int,
    kind: OutcomeKind,
    pause: bool,
    slow: bool,
    opted_out: bool,
    min_delay: float,
    family: ErrorFamily,
) -> None:
    decision = _classify(_error(code))
    assert decision.kind is kind
    assert decision.pause_campaign is pause
    assert decision.slow_down is slow
    assert decision.opted_out is opted_out
    assert decision.family is family
    assert not decision.unknown_error
    assert decision.parameter_problem is (family is PARAMETER)
    assert decision.reason.startswith(f"{code} ")  # the code leads the reason (status_reason)
    assert "some details" in decision.reason  # error_data.details kept for the operator
    if kind is RETRY:
        assert decision.retry_after_s is not None
        assert decision.retry_after_s >= max(min_delay, 1.0)
    else:
        assert decision.retry_after_s is None


@pytest.mark.parametrize("code", [c for c, kind, *_ in TABLE if kind is RETRY])
def test_retry_past_max_attempts_is_error(code: int) -> None:
    decision = _classify(_error(code), attempt_no=5, max_attempts=5)
    assert decision.kind is ERROR
    assert decision.reason.startswith("retries exhausted: ")
    assert str(code) in decision.reason
    assert decision.retry_after_s is None
    assert not decision.pause_campaign


def test_exhausted_throughput_limit_still_slows_the_sender() -> None:
    assert _classify(_error(130429), attempt_no=3, max_attempts=3).slow_down


def test_last_allowed_retry_is_still_retry() -> None:
    assert _classify(_error(131000), attempt_no=4, max_attempts=5).kind is RETRY


def test_pair_rate_retry_is_minutes_not_seconds() -> None:
    delays = [
        classify(_error(131056), 1, 5, random.Random(seed)).retry_after_s for seed in range(50)
    ]
    assert all(d is not None and 60.0 <= d <= 960.0 for d in delays)


def test_success_is_sent() -> None:
    result = SendResult(wamid="wamid.X", wa_id="4915123456789", http_status=200)
    assert _classify(result) == Decision(OutcomeKind.SENT, reason="accepted")


def test_2xx_without_wamid_is_unknown_not_retry() -> None:
    decision = _classify(SendResult(http_status=200, error_details="garbage"))
    assert decision.kind is OutcomeKind.UNKNOWN


def test_after_send_transport_failure_is_unknown_and_never_retried() -> None:
    result = SendResult(transport=TransportFailure.AFTER_SEND, error_title="ReadTimeout")
    decision = _classify(result, attempt_no=1, max_attempts=5)
    assert decision.kind is OutcomeKind.UNKNOWN
    assert decision.retry_after_s is None
    assert "ReadTimeout" in decision.reason


def test_connect_failure_is_retried_with_backoff() -> None:
    result = SendResult(transport=TransportFailure.CONNECT, error_title="ConnectError")
    decision = _classify(result)
    assert decision.kind is RETRY
    assert decision.retry_after_s is not None
    assert "ConnectError" in decision.reason
    assert _classify(result, attempt_no=5, max_attempts=5).kind is ERROR


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_without_code_is_retried_after_its_webhook_had_time(status: int) -> None:
    decision = _classify(SendResult(http_status=status, error_details="<html>bad gateway"))
    assert decision.kind is RETRY
    assert f"HTTP {status}" in decision.reason
    assert decision.retry_after_s is not None and decision.retry_after_s >= SETTLE_FLOOR_S


def test_5xx_with_unknown_code_is_retried_after_its_webhook_had_time() -> None:
    decision = _classify(_error(999999, status=503))
    assert decision.kind is RETRY
    assert decision.retry_after_s is not None and decision.retry_after_s >= SETTLE_FLOOR_S


def test_errors_before_the_platform_took_anything_are_retried_sooner() -> None:
    # A connect failure or a throughput refusal sent nothing: no webhook to wait for.
    connect = _classify(SendResult(transport=TransportFailure.CONNECT, error_details="refused"))
    throttled = _classify(_error(130429))
    for decision in (connect, throttled):
        assert decision.retry_after_s is not None and decision.retry_after_s < SETTLE_FLOOR_S


def test_5xx_with_known_code_follows_the_code() -> None:
    assert _classify(_error(131026, status=500)).kind is FAILED


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_unknown_code_is_its_own_kind_of_error(status: int) -> None:
    decision = _classify(_error(987654, status=status))
    assert decision.kind is ERROR
    assert decision.unknown_error  # counted by dispatch, never a plain per-contact error
    assert decision.family is ErrorFamily.UNKNOWN
    assert not decision.pause_campaign  # one alone does not pause; a run of them does
    assert "987654" in decision.reason


def test_401_without_body_pauses() -> None:
    decision = _classify(SendResult(http_status=401))
    assert decision.kind is ERROR
    assert decision.pause_campaign


@pytest.mark.parametrize("status", [403, 404])
def test_wrong_credentials_or_url_without_code_pause(status: int) -> None:
    assert _classify(SendResult(http_status=status)).pause_campaign


def test_429_without_code_is_retry_and_slow_down() -> None:
    decision = _classify(SendResult(http_status=429))
    assert decision.kind is RETRY
    assert decision.slow_down


def test_other_4xx_without_code_is_an_unknown_error() -> None:
    decision = _classify(SendResult(http_status=413))
    assert decision.kind is ERROR
    assert decision.unknown_error
    assert "413" in decision.reason


def test_known_answers_are_never_unknown_errors() -> None:
    for result in (
        SendResult(http_status=401),
        SendResult(http_status=500),
        SendResult(http_status=200, wamid="wamid.x"),
        SendResult(transport=TransportFailure.CONNECT),
    ):
        assert not _classify(result).unknown_error


def test_held_answer_is_sent_and_flagged_held() -> None:
    result = SendResult(
        http_status=200, wamid="wamid.x", message_status="held_for_quality_assessment"
    )
    assert result.held
    assert _classify(result).kind is OutcomeKind.SENT
    assert not SendResult(http_status=200, wamid="w", message_status="accepted").held


def test_no_response_at_all_is_unknown() -> None:
    assert _classify(SendResult()).kind is OutcomeKind.UNKNOWN


def test_reason_is_bounded() -> None:
    assert len(_classify(_error(131026, details="x" * 10_000)).reason) <= 500


def test_invalid_attempt_numbers() -> None:
    with pytest.raises(ValueError, match="1-based"):
        classify(SendResult(), 0, 5)


def test_meaning_of() -> None:
    assert meaning_of(131050) == "recipient stopped marketing messages"
    assert meaning_of(42) == "unknown platform error"
    assert meaning_of(231).startswith("permission missing")


@given(
    attempt_no=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0.0, max_value=100.0),
    cap=st.floats(min_value=0.0, max_value=10_000.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_within_bounds(attempt_no: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_seconds(attempt_no, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(attempt_no - 1, 1023))


@given(seed=st.integers(min_value=0, max_value=2**32))
def test_backoff_first_attempt_is_at_most_base(seed: int) -> None:
    assert backoff_seconds(1, base=2.0, cap=900.0, rng=random.Random(seed)) <= 2.0


@given(attempt_no=st.integers(min_value=1, max_value=12))
def test_backoff_grows_exponentially_up_to_the_cap(attempt_no: int) -> None:
    # Full jitter: the top of the range doubles per attempt until it reaches the cap.
    samples = [
        backoff_seconds(attempt_no, base=2.0, cap=900.0, rng=random.Random(s)) for s in range(200)
    ]
    ceiling = min(900.0, 2.0 * 2 ** (attempt_no - 1))
    assert max(samples) <= ceiling
    assert max(samples) > 0.9 * ceiling  # the jitter spans the whole range


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff_seconds(0, rng=random.Random(1))


def test_unknown_sender_object_pauses() -> None:
    result = SendResult(http_status=400, error_code=100, error_subcode=33, error_title="(#100) x")
    decision = _classify(result)
    assert decision.kind is ERROR and decision.pause_campaign
    assert decision.family is ErrorFamily.ACCOUNT
    assert decision.reason.startswith("100 ")
    other = SendResult(http_status=400, error_code=100, error_subcode=None)
    assert not _classify(other).pause_campaign  # a plain 100 is a parameter problem
