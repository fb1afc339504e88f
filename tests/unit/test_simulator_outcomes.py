"""The simulator's outcome-by-number rules, error catalogue and runtime config updates."""

from __future__ import annotations

import dataclasses

import pytest

from campaigns.dev.simulator.config import SimulatorConfig, apply_updates
from campaigns.dev.simulator.outcomes import (
    ERROR_CATALOGUE,
    Outcome,
    OutcomeKind,
    OutcomeRules,
    bucket_of,
    error_info,
    outcome_for,
    reads,
    skips_delivered,
    wa_id_for,
)

K = OutcomeKind
DEMO = OutcomeRules.demo()


def test_defaults_everything_succeeds() -> None:
    rules = OutcomeRules()
    for n in range(100):
        digits = f"49151000000{n:02d}"
        for attempt in (1, 2, 5):
            assert outcome_for(digits, rules, attempt) == Outcome(K.SUCCESS)


@pytest.mark.parametrize(
    ("digits", "attempt", "expected"),
    [
        ("4915100000000", 1, Outcome(K.UNDELIVERABLE, 131026)),
        ("4915100000002", 1, Outcome(K.UNDELIVERABLE, 131026)),
        ("4915100000002", 3, Outcome(K.UNDELIVERABLE, 131026)),  # final: every attempt
        ("4915100000003", 1, Outcome(K.DELIVERY_FAILED, 131049)),
        ("4915100000005", 2, Outcome(K.DELIVERY_FAILED, 131049)),
        ("4915100000006", 1, Outcome(K.SERVER_ERROR, 131000)),
        ("4915100000007", 1, Outcome(K.SERVER_ERROR, 131000)),
        ("4915100000007", 2, Outcome(K.SUCCESS)),  # 5xx once, then success
        ("4915100000008", 1, Outcome(K.TIMEOUT)),
        ("4915100000008", 2, Outcome(K.SUCCESS)),
        ("4915100000009", 1, Outcome(K.SUCCESS)),
        ("4915100000099", 1, Outcome(K.SUCCESS)),
        ("4915100000100", 1, Outcome(K.UNDELIVERABLE, 131026)),  # only the last two count
        ("4915100004208", 1, Outcome(K.TIMEOUT)),
    ],
)
def test_demo_preset_table(digits: str, attempt: int, expected: Outcome) -> None:
    assert outcome_for(digits, DEMO, attempt) == expected


def test_demo_boundaries_are_documented_ones() -> None:
    assert DEMO.boundaries() == [
        (0, 3, K.UNDELIVERABLE),
        (3, 6, K.DELIVERY_FAILED),
        (6, 8, K.SERVER_ERROR),
        (8, 9, K.TIMEOUT),
        (9, 100, K.SUCCESS),
    ]
    counts = {k: 0 for k in K}
    for n in range(100):
        counts[outcome_for(f"{n:02d}", DEMO).kind] += 1
    assert counts[K.UNDELIVERABLE] == 3
    assert counts[K.DELIVERY_FAILED] == 3
    assert counts[K.SERVER_ERROR] == 2
    assert counts[K.TIMEOUT] == 1
    assert counts[K.SUCCESS] == 91


def test_buckets_follow_the_fixed_order_with_gaps_for_zero_shares() -> None:
    rules = OutcomeRules(undeliverable_share=0.1, timeout_share=0.25)
    assert rules.boundaries() == [
        (0, 10, K.UNDELIVERABLE),
        (10, 35, K.TIMEOUT),
        (35, 100, K.SUCCESS),
    ]
    assert outcome_for("12309", rules).kind is K.UNDELIVERABLE
    assert outcome_for("12310", rules).kind is K.TIMEOUT
    assert outcome_for("12334", rules).kind is K.TIMEOUT
    assert outcome_for("12335", rules).kind is K.SUCCESS
    full = OutcomeRules(undeliverable_share=1.0)
    assert {outcome_for(f"{n:02d}", full).kind for n in range(100)} == {K.UNDELIVERABLE}


def test_accepted_error_bucket_comes_after_timeouts() -> None:
    rules = OutcomeRules(timeout_share=0.1, accepted_error_share=0.05)
    assert rules.boundaries() == [
        (0, 10, K.TIMEOUT),
        (10, 15, K.ACCEPTED_ERROR),
        (15, 100, K.SUCCESS),
    ]
    first = outcome_for("12312", rules, 1)
    assert first == Outcome(K.ACCEPTED_ERROR, 131000) and first.accepted
    assert outcome_for("12312", rules, 2) == Outcome(K.SUCCESS)  # the retry is a second send
    assert outcome_for("12315", rules, 1) == Outcome(K.SUCCESS)


def test_attempt_counts_and_codes_are_configurable() -> None:
    rules = OutcomeRules(
        server_error_share=0.5,
        server_error_attempts=2,
        server_error_code=131016,
        delivery_fail_share=0.5,
        delivery_fail_code=131026,
    )
    assert outcome_for("100", rules, 1) == Outcome(K.DELIVERY_FAILED, 131026)
    assert outcome_for("150", rules, 1) == Outcome(K.SERVER_ERROR, 131016)
    assert outcome_for("150", rules, 2) == Outcome(K.SERVER_ERROR, 131016)
    assert outcome_for("150", rules, 3) == Outcome(K.SUCCESS)
    always = OutcomeRules(timeout_share=1.0, timeout_attempts=10**9)
    assert outcome_for("1", always, 50).kind is K.TIMEOUT


def test_explicit_map_takes_precedence() -> None:
    rules = OutcomeRules(
        undeliverable_share=1.0,
        explicit={
            "4915100000001": K.SUCCESS,
            "4915100000002": 131050,
            "4915100000003": K.SERVER_ERROR,
            "4915100000004": 132000,
        },
    )
    assert outcome_for("4915100000001", rules) == Outcome(K.SUCCESS)
    for attempt in (1, 2, 3):  # an explicit code answers on every attempt
        assert outcome_for("4915100000002", rules, attempt) == Outcome(K.ERROR, 131050)
    assert outcome_for("4915100000003", rules, 1) == Outcome(K.SERVER_ERROR, 131000)
    assert outcome_for("4915100000003", rules, 2) == Outcome(K.SUCCESS)
    assert outcome_for("4915100000004", rules) == Outcome(K.ERROR, 132000)
    assert outcome_for("4915100000005", rules) == Outcome(K.UNDELIVERABLE, 131026)
    with pytest.raises(ValueError, match="needs a code"):
        outcome_for("1", OutcomeRules(explicit={"1": K.ERROR}))


def test_accepted_property() -> None:
    assert Outcome(K.SUCCESS).accepted
    assert Outcome(K.DELIVERY_FAILED, 131049).accepted
    assert Outcome(K.TIMEOUT).accepted
    assert Outcome(K.ACCEPTED_ERROR, 131000).accepted
    assert not Outcome(K.UNDELIVERABLE, 131026).accepted
    assert not Outcome(K.SERVER_ERROR, 131000).accepted
    assert not Outcome(K.ERROR, 190).accepted


@pytest.mark.parametrize(
    "kwargs",
    [
        {"undeliverable_share": 0.6, "delivery_fail_share": 0.5},
        {"undeliverable_share": -0.1},
        {"timeout_share": 1.5},
        {"timeout_share": 0.6, "accepted_error_share": 0.5},
        {"read_share": 2.0},
        {"server_error_attempts": -1},
    ],
)
def test_invalid_rules_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"share|attempt"):
        OutcomeRules(**kwargs)  # type: ignore[arg-type]


def test_bucket_of_short_and_odd_numbers() -> None:
    assert bucket_of("4915100000042") == 42
    assert bucket_of("7") == 7
    assert bucket_of("") == 0


def test_reads_uses_the_digits_before_the_last_two() -> None:
    rules = OutcomeRules(read_share=0.7)
    assert reads("4915100000042", rules) is True  # m = 00
    assert reads("4915100006999", rules) is True  # m = 69
    assert reads("4915100007000", rules) is False  # m = 70
    assert reads("4915100009912", rules) is False
    assert reads("4915100000042", OutcomeRules(read_share=0.0)) is False
    assert reads("4915100009999", OutcomeRules(read_share=1.0)) is True


def test_wa_id_quirks_and_overrides() -> None:
    plain = OutcomeRules()
    assert wa_id_for("525512345678", plain) == "525512345678"
    quirky = OutcomeRules(mimic_wa_id_quirks=True, wa_id_overrides={"4915100000001": "49999"})
    assert wa_id_for("525512345678", quirky) == "5215512345678"  # Mexico: legacy 1
    assert wa_id_for("5215512345678", quirky) == "5215512345678"
    assert wa_id_for("5511987654321", quirky) == "551187654321"  # Brazil: 9th digit dropped
    assert wa_id_for("551187654321", quirky) == "551187654321"
    assert wa_id_for("4915123456789", quirky) == "4915123456789"
    assert wa_id_for("4915100000001", quirky) == "49999"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (100, 400),
        (131008, 400),
        (131026, 400),
        (132000, 400),
        (132001, 400),
        (190, 401),
        (130429, 429),
        (131056, 429),
        (80007, 429),
        (131000, 500),
        (131016, 503),
        (131031, 403),
        (999999, 400),
    ],
)
def test_error_catalogue_http_statuses(code: int, status: int) -> None:
    info = error_info(code)
    assert info.http_status == status
    assert info.title and info.details


def test_apply_updates_changes_shares_and_explicit_map() -> None:
    cfg = SimulatorConfig()
    new = apply_updates(
        cfg,
        {
            "rate_per_second": 10,
            "undeliverable_share": 0.2,
            "explicit": {"4915100000050": "timeout", "4915100000051": 131050},
            "missing_templates": ["gone"],
        },
    )
    assert new.rate_per_second == 10
    assert new.missing_templates == frozenset({"gone"})
    assert outcome_for("4915100000019", new.outcomes) == Outcome(K.UNDELIVERABLE, 131026)
    assert outcome_for("4915100000050", new.outcomes) == Outcome(K.TIMEOUT)
    assert outcome_for("4915100000051", new.outcomes) == Outcome(K.ERROR, 131050)
    assert cfg.outcomes.undeliverable_share == 0.0  # the old config is untouched
    with pytest.raises(ValueError, match="unknown"):
        apply_updates(cfg, {"access_token": "x"})
    with pytest.raises(ValueError, match="share"):
        apply_updates(cfg, {"undeliverable_share": 3})
    with pytest.raises(ValueError):
        apply_updates(cfg, {"explicit": {"1": "nonsense"}})


def test_config_validation_and_demo() -> None:
    demo = SimulatorConfig.demo(port=0)
    assert demo.rate_per_second == 80.0 and demo.port == 0
    assert demo.outcomes == OutcomeRules.demo()
    assert SimulatorConfig(missing_templates={"a"}).missing_templates == frozenset({"a"})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SimulatorConfig(webhook_delay_min_s=1.0, webhook_delay_max_s=0.5)
    with pytest.raises(ValueError):
        SimulatorConfig(duplicate_share=1.5)
    summary = SimulatorConfig(access_token="tok", app_secret="sec").summary()
    assert "access_token" not in summary and "app_secret" not in summary
    assert summary["outcomes"]["read_share"] == 0.7
    assert "_table" not in summary["outcomes"]
    assert dataclasses.replace(demo, pair_interval_s=0).pair_interval_s == 0


# --------------------------------------------------------------------------- 2026 platform


def test_undeliverable_later_is_accepted_then_fails_with_131026() -> None:
    rules = OutcomeRules(undeliverable_share=0.02, undeliverable_later_share=0.03)
    assert rules.boundaries()[:2] == [
        (0, 2, K.UNDELIVERABLE),
        (2, 5, K.UNDELIVERABLE_LATER),
    ]
    later = outcome_for("4915100000003", rules)
    assert later == Outcome(K.UNDELIVERABLE_LATER, 131026)
    assert later.accepted  # answered 200: the failure comes by webhook
    assert outcome_for("4915100000001", rules) == Outcome(K.UNDELIVERABLE, 131026)
    assert outcome_for("4915100000005", rules) == Outcome(K.SUCCESS)
    custom = OutcomeRules(undeliverable_later_code=131049, explicit={"1": K.UNDELIVERABLE_LATER})
    assert outcome_for("1", custom) == Outcome(K.UNDELIVERABLE_LATER, 131049)


def test_undeliverable_later_is_placed_after_the_other_shares() -> None:
    rules = OutcomeRules(accepted_error_share=0.01, undeliverable_later_share=0.01)
    assert [k for _, _, k in rules.boundaries()] == [
        K.ACCEPTED_ERROR,
        K.UNDELIVERABLE_LATER,
        K.SUCCESS,
    ]
    with pytest.raises(ValueError, match="more than 1"):
        OutcomeRules(undeliverable_share=0.5, undeliverable_later_share=0.6)


def test_read_without_delivered_by_digits() -> None:
    rules = OutcomeRules(read_without_delivered_share=0.3)
    assert skips_delivered("4915100290099", rules) is True  # digits[-6:-4] = 29 < 30
    assert skips_delivered("4915100300099", rules) is False
    assert skips_delivered("4915100000099", OutcomeRules()) is False  # default: never
    with pytest.raises(ValueError):
        OutcomeRules(read_without_delivered_share=1.5)


def test_catalogue_has_the_2026_codes() -> None:
    info = error_info(132018)
    assert info.http_status == 400
    assert info.details == (
        "Param text cannot have new-line/tab characters or more than 4 consecutive spaces"
    )
    for code in (0, 131005, 131021, 131030, 131037, 131042, 130472, 130497, 132012):
        assert code in ERROR_CATALOGUE


def test_runtime_updates_take_the_new_knobs() -> None:
    cfg = apply_updates(
        SimulatorConfig(),
        {
            "undeliverable_later_share": 0.05,
            "read_without_delivered_share": 0.2,
            "undeliverable_later_code": 131050,
            "user_ids": {"4915100000001": "DE.123"},
            "explicit": {"4915100000002": "undeliverable_later", "4915100000003": 131042},
        },
    )
    rules = cfg.outcomes
    assert (rules.undeliverable_later_share, rules.read_without_delivered_share) == (0.05, 0.2)
    assert rules.user_ids == {"4915100000001": "DE.123"}
    assert outcome_for("4915100000002", rules) == Outcome(K.UNDELIVERABLE_LATER, 131050)
    assert outcome_for("4915100000003", rules) == Outcome(K.ERROR, 131042)
    summary = cfg.summary()["outcomes"]
    assert summary["user_ids"] == {"4915100000001": "DE.123"}
    assert summary["explicit"]["4915100000002"] == "undeliverable_later"
