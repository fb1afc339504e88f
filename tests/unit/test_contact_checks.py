"""The contacts check's rules (pure) and the simulator's contacts endpoint answers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from campaigns.dev.simulator import contacts as sim_contacts
from campaigns.dev.simulator.outcomes import OutcomeKind, OutcomeRules
from campaigns.domain.contact_checks import (
    Answer,
    CheckStatus,
    Parsed,
    cached_answer,
    in_order,
    parse_input,
    provider_answer,
    registry_answer,
)
from campaigns.domain.registry import Person

NOW = datetime(2026, 12, 1, tzinfo=UTC)
TTL = timedelta(hours=168)
PHONE = "+16315551000"


@pytest.mark.parametrize(
    ("item", "e164"),
    [
        ("+1 631 555 1001", "+16315551001"),
        ("+1 (516) 283-7151", "+15162837151"),
        ("16315551000", "+16315551000"),  # digits with their country code
        (16315551000, "+16315551000"),
        ("+54 9 11 5612-1008", "+5491156121008"),
        ("+163155588", None),
        ("call me", None),
        (None, None),
        (True, None),
        ({"phone": "+16315551000"}, None),
    ],
)
def test_inputs_in_any_format(item: Any, e164: str | None) -> None:
    parsed = parse_input(item)
    assert parsed.e164 == e164
    assert (parsed.problem is None) == (e164 is not None)


def test_a_provider_answer_is_kept_for_the_ttl() -> None:
    person = Person(PHONE, check_status="valid", checked_at=NOW - TTL + timedelta(seconds=1))
    person = replace(person, wa_id="16315551000")
    assert cached_answer(person, now=NOW, ttl=TTL) == Answer(
        CheckStatus.VALID, "16315551000", cached=True
    )
    assert cached_answer(person, now=NOW + timedelta(seconds=2), ttl=TTL) is None
    invalid = replace(person, check_status="invalid")
    assert cached_answer(invalid, now=NOW, ttl=TTL) == Answer(CheckStatus.INVALID, cached=True)
    assert cached_answer(Person(PHONE), now=NOW, ttl=TTL) is None
    assert cached_answer(None, now=NOW, ttl=TTL) is None


def test_without_a_provider_the_registry_answers_from_sends() -> None:
    unavailable = Person(PHONE, unavailable_since=NOW, unavailable_code=131026)
    assert (
        registry_answer(PHONE, unavailable, delivered=True, ttl_h=168).status is CheckStatus.INVALID
    )
    valid = registry_answer(PHONE, Person(PHONE, wa_id="x1"), delivered=True, ttl_h=168)
    assert (valid.status, valid.wa_id) == (CheckStatus.VALID, "x1")
    assert registry_answer(PHONE, None, delivered=True, ttl_h=168).wa_id == "16315551000"
    unknown = registry_answer(PHONE, None, delivered=False, ttl_h=168)
    assert unknown.status is CheckStatus.FAILED
    assert unknown.message is not None and "168 h" in unknown.message


@pytest.mark.parametrize(
    ("raw", "status", "wa_id"),
    [
        ({"input": "+1", "status": "valid", "wa_id": "1"}, CheckStatus.VALID, "1"),
        ({"input": "+1", "status": "invalid", "wa_id": "1"}, CheckStatus.INVALID, None),
        ({"input": "+1", "status": "processing"}, CheckStatus.PROCESSING, None),
        ({"input": "+1", "status": "pending"}, CheckStatus.FAILED, None),  # the sandbox's answer
        (None, CheckStatus.FAILED, None),
    ],
)
def test_provider_items(raw: dict[str, Any] | None, status: CheckStatus, wa_id: str | None) -> None:
    answer = provider_answer(raw)
    assert (answer.status, answer.wa_id, answer.cached) == (status, wa_id, False)


def test_answers_come_back_in_input_order() -> None:
    parsed = [Parsed("+2"), Parsed(None, "not a phone number"), Parsed("+1"), Parsed("+2")]
    answers = {"+1": Answer(CheckStatus.VALID, "1"), "+2": Answer(CheckStatus.INVALID)}
    out = in_order(parsed, answers)
    assert [(i, a.status) for i, a in out] == [
        (0, CheckStatus.INVALID),
        (1, CheckStatus.FAILED),
        (2, CheckStatus.VALID),
        (3, CheckStatus.INVALID),
    ]
    assert out[1][1].message == "not a phone number"


# --------------------------------------------------------------------------- the simulator

RULES = OutcomeRules(explicit={"16315551002": OutcomeKind.UNDELIVERABLE, "16315551003": 1013})


def sim(
    item: Any, *, mode: str = "classic", wait: bool = True, seen: set[str] | None = None
) -> dict[str, Any]:
    return sim_contacts.answer(
        item, mode=mode, rules=RULES, wait=wait, seen=set() if seen is None else seen
    )


def test_classic_mode_answers_valid_and_invalid() -> None:
    assert sim("+1 631 555 1001") == {
        "input": "+1 631 555 1001",
        "status": "valid",
        "wa_id": "16315551001",
    }
    assert sim("+16315551002") == {"input": "+16315551002", "status": "invalid"}
    assert sim("+16315551003")["status"] == "invalid"  # 1013
    assert sim("12")["status"] == "failed"


def test_classic_no_wait_answers_processing_once() -> None:
    seen: set[str] = set()
    assert sim("+16315551001", wait=False, seen=seen)["status"] == "processing"
    assert sim("+16315551001", wait=False, seen=seen)["status"] == "valid"


def test_repurposed_mode_says_valid_for_everyone() -> None:
    for number in ("+16315551001", "+16315551002", "+16315551003"):
        answer = sim(number, mode="repurposed", wait=False)
        assert answer["status"] == "valid" and answer["wa_id"] == number[1:]
