from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import campaigns.domain.phones as phones_module
from campaigns.domain.phones import (
    PhoneBad,
    PhoneOk,
    PhoneRejection,
    normalize_phone,
)

R = PhoneRejection

ACCEPTED = [
    # E.164 in, whatever the default region
    ("+4915123456789", "DE", "+4915123456789"),
    ("+4915123456789", "US", "+4915123456789"),
    ("+49 (0)151 2345 6789", "GB", "+4915123456789"),
    # national formats with spaces, dashes, dots, slashes and parentheses
    ("0151 2345-6789", "DE", "+4915123456789"),
    ("(030) 123 456 78", "DE", "+493012345678"),
    ("030/12345678", "DE", "+493012345678"),
    ("07911 123456", "GB", "+447911123456"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("(201) 555-0123", "US", "+12015550123"),
    ("201.555.0123", "US", "+12015550123"),
    ("1-201-555-0123", "US", "+12015550123"),
    ("06 12 34 56 78", "FR", "+33612345678"),
    ("01.23.45.67.89", "FR", "+33123456789"),
    ("(11) 91234-5678", "BR", "+5511912345678"),
    ("98765 43210", "IN", "+919876543210"),
    ("+91 98765-43210", "IN", "+919876543210"),
    ("55 1234 5678", "MX", "+525512345678"),
    ("(33) 1234-5678", "MX", "+523312345678"),
    # tel: URI prefix, any case
    ("tel:+49-151-23456789", "US", "+4915123456789"),
    ("TEL:0151 23456789", "DE", "+4915123456789"),
    ("Tel: +44 7911 123456", "DE", "+447911123456"),
    # "00" international prefix in regions whose own prefix is different (US 011, JP 010)
    ("0049 151 23456789", "US", "+4915123456789"),
    ("0033 6 12 34 56 78", "US", "+33612345678"),
    ("0049 151 23456789", "JP", "+4915123456789"),
    # ... and where it is the region's own prefix
    ("0049 151 23456789", "DE", "+4915123456789"),
    # ...also for the campaign's own country, where DE rules would read the digits as a
    # different national number (+494915123456789): the international reading wins
    ("4915123456789", "DE", "+4915123456789"),
    ("447911123456", "GB", "+447911123456"),
    ("33612345678", "FR", "+33612345678"),
    ("15123456789", "DE", "+4915123456789"),  # no trunk 0 and not "49...": national reading
    # legacy Mexican mobile "+52 1 ..."
    ("+52 1 55 1234 5678", "MX", "+525512345678"),
    ("+5215512345678", "US", "+525512345678"),
    ("+52 1 33 1234 5678", "DE", "+523312345678"),
    # NBSP and other invisible characters around or inside the number
    ("\xa0+49 151 23456789\xa0", "DE", "+4915123456789"),
    ("+49\xa0151\xa023456789", "DE", "+4915123456789"),
    ("  \t0151 23456789\n", "DE", "+4915123456789"),
    ("\u202a+49 151 23456789\u202c", "DE", "+4915123456789"),
]


@pytest.mark.parametrize(("raw", "region", "e164"), ACCEPTED)
def test_normalize_phone_accepts(raw: str, region: str, e164: str) -> None:
    assert normalize_phone(raw, region) == PhoneOk(e164)


# Numbers that lost their "+" (or "00"), in any formatting: invalid for the region, no trunk
# 0, a national reading of no possible length there, valid as international. Accepted as that
# number, and the row says what it was read as.
REPAIRED = [
    ("1-202-555-0104", "GB", "+12025550104", "+1 202-555-0104"),
    ("230 5 2512345", "GB", "+23052512345", "+230 5251 2345"),
    ("784951234567", "GB", "+74951234567", "+7 495 123-45-67"),
    ("7 495 123-45-67", "GB", "+74951234567", "+7 495 123-45-67"),
    ("(1) 202 555 0104", "GB", "+12025550104", "+1 202-555-0104"),
    ("1.202.555.0104", "GB", "+12025550104", "+1 202-555-0104"),
    ("1 (202) 555-0104", "GB", "+12025550104", "+1 202-555-0104"),
    ("1\u2013202\u2013555\u20130104", "GB", "+12025550104", "+1 202-555-0104"),  # en dashes
    ("230-5251-2345", "GB", "+23052512345", "+230 5251 2345"),
    # Excel dropped the "+" of a number stored as a number
    ("4915123456789", "GB", "+4915123456789", "+49 1512 3456789"),
    ("447911123456", "US", "+447911123456", "+44 7911 123456"),
    ("44 7911 123456", "US", "+447911123456", "+44 7911 123456"),
    ("12015550123", "GB", "+12015550123", "+1 201-555-0123"),
    ("49 1512 3456789", "FR", "+4915123456789", "+49 1512 3456789"),
    # ... with the legacy Mexican mobile "1"
    ("5215512345678", "GB", "+525512345678", "+52 55 1234 5678"),
    ("521 55 1234 5678", "GB", "+525512345678", "+52 55 1234 5678"),
]


@pytest.mark.parametrize(("raw", "region", "e164", "reading"), REPAIRED)
def test_lost_plus_is_repaired_and_says_so(raw: str, region: str, e164: str, reading: str) -> None:
    assert normalize_phone(raw, region) == PhoneOk(
        e164, f"read as the international number {reading}"
    )


# Still ambiguous: the national reading has a possible length for the region (a mistyped
# national number is as likely as a lost "+"), or a trunk 0 makes it national.
AMBIGUOUS = [
    ("1-202-555-0104", "DE", "+1 202-555-0104"),
    ("12025550104", "DE", "+1 202-555-0104"),
]


@pytest.mark.parametrize(("raw", "region", "reading"), AMBIGUOUS)
def test_ambiguous_lost_plus_stays_refused_and_says_why(
    raw: str, region: str, reading: str
) -> None:
    result = normalize_phone(raw, region)
    assert isinstance(result, PhoneBad) and result.rejection is R.INVALID
    assert result.detail == (
        f"not a valid number for region {region}; ambiguous: read as international it would "
        f"be {reading} (write it with + if that is meant)"
    )


@pytest.mark.parametrize("raw", ["0-202-555-0104", "0230 5 2512345", "(0) 1 202 555 0104"])
def test_a_trunk_zero_is_never_read_as_international(raw: str) -> None:
    assert isinstance(normalize_phone(raw, "GB"), PhoneBad)


# Vectors of Signal's own test suites (Signal-Android: E164UtilTest, PhoneNumberFormatterTest),
# those whose result is a valid number: the same E.164 here, never marked repaired.
SIGNAL_ACCEPTED = [
    ("(020) 7946 0018", "GB", "+442079460018"),
    ("0049 030 123456", "DE", "+4930123456"),
    ("0049 (0)30123456", "DE", "+4930123456"),
    ("0049((0)30)123456", "DE", "+4930123456"),
    ("+49 (0) 30  1 2  3 45 6 ", "DE", "+4930123456"),
    ("030 123456", "DE", "+4930123456"),
    ("+0491601234567", "DE", "+491601234567"),  # "+0" written before the country code
    ("0115511912345678", "US", "+5511912345678"),
    ("+551234567890", "US", "+551234567890"),
    ("+16105880522", "BR", "+16105880522"),
    ("002214085048577", "BR", "+14085048577"),
    ("011912345678", "BR", "+5511912345678"),
    ("02111912345678", "BR", "+5511912345678"),
    ("22 9 8765 4321", "BR", "+5522987654321"),
    ("+5521912345678", "BR", "+5521912345678"),
]


@pytest.mark.parametrize(("raw", "region", "e164"), SIGNAL_ACCEPTED)
def test_signal_vectors_accepted(raw: str, region: str, e164: str) -> None:
    assert normalize_phone(raw, region) == PhoneOk(e164)


# Signal's invalid inputs (and its short codes, which are no WhatsApp recipients).
SIGNAL_REFUSED = [
    ("junk@junk.net", "US"),
    ("__textsecure_group__!foobar", "US"),
    ("bonbon", "US"),
    ("44444444441234512312312312312312312312", "US"),
    ("144444444441234512312312312312312312312", "US"),
    ("1", "US"),
    ("55", "US"),
    ("0", "US"),
    ("000", "US"),
    ("0000000", "US"),
    ("+1555ABC4567", "US"),
    ("911", "US"),
    ("40404", "US"),
    ("+40404", "US"),
    ("+456-7890", "US"),
]


@pytest.mark.parametrize(("raw", "region"), SIGNAL_REFUSED)
def test_signal_invalid_vectors_refused(raw: str, region: str) -> None:
    assert isinstance(normalize_phone(raw, region), PhoneBad)


REJECTED = [
    ("", "DE", R.EMPTY, "empty phone"),
    ("   ", "DE", R.EMPTY, "empty phone"),
    ("\xa0\t", "DE", R.EMPTY, "empty phone"),
    ("tel:", "DE", R.EMPTY, "empty phone"),
    ("abc", "DE", R.NOT_A_NUMBER, "not a phone number"),
    ("n/a", "DE", R.NOT_A_NUMBER, "not a phone number"),
    ("0151 2345678a", "DE", R.NOT_A_NUMBER, "not a phone number"),
    ("1-800-FLOWERS", "US", R.NOT_A_NUMBER, "not a phone number"),
    ("+1 201 555 0123 ext. 5", "US", R.NOT_A_NUMBER, "not a phone number"),
    ("+49 151 2345678é", "DE", R.NOT_A_NUMBER, "not a phone number"),
    ("-", "DE", R.NOT_A_NUMBER, "not a phone number"),
    ("+49 1", "DE", R.NOT_A_NUMBER, "not a phone number: too short"),
    ("+49 151 2345678901234567890", "DE", R.NOT_A_NUMBER, "not a phone number: too long"),
    ("+999 1234567", "DE", R.NOT_A_NUMBER, "not a phone number: unknown country code"),
    (
        "0151 23456789",
        "ZZ",
        R.NOT_A_NUMBER,
        "not a phone number: no country code and no usable default region",
    ),
    ("123", "DE", R.INVALID, "not a valid number for region DE"),
    ("12345", "US", R.INVALID, "not a valid number for region US"),
    ("07700 900123", "GB", R.INVALID, "not a valid number for region GB"),
    ("(555) 555-5555", "US", R.INVALID, "not a valid number for region US"),
    ("+33 6 12", "US", R.INVALID, "not a valid number for region FR"),
    ("+49 1234", "US", R.INVALID, "not a valid number for region DE"),
    # a legacy-looking Mexican number that is still invalid without the "1"
    ("+52 1 00 1234 5678", "MX", R.INVALID, "not a valid number for region MX"),
]


@pytest.mark.parametrize(("raw", "region", "rejection", "detail"), REJECTED)
def test_normalize_phone_rejects(
    raw: str, region: str, rejection: PhoneRejection, detail: str
) -> None:
    assert normalize_phone(raw, region) == PhoneBad(rejection, detail)


@pytest.mark.parametrize("raw", ["4.91512E+12", "4,91512E+12", "4.91512e12", "1E+11"])
def test_scientific_notation_is_not_a_number_and_says_why(raw: str) -> None:
    result = normalize_phone(raw, "DE")
    assert isinstance(result, PhoneBad)
    assert result.rejection is R.NOT_A_NUMBER
    assert "scientific notation" in result.detail
    assert "digits were lost" in result.detail


def test_rejection_codes_and_messages_are_stable() -> None:
    assert [(r.value, r.message) for r in PhoneRejection] == [
        ("empty_phone", "empty phone"),
        ("not_a_number", "not a phone number"),
        ("invalid_number", "not a valid number for its region"),
    ]


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls = [0]
    original: Callable[..., Any] = getattr(phones_module, name)

    def wrapper(*args: Any) -> Any:
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(phones_module, name, wrapper)
    return calls


@pytest.mark.parametrize(
    ("raw", "region"),
    [("+4915123456789", "DE"), ("0151 23456789", "DE"), ("(201) 555-0123", "US")],
)
def test_common_path_parses_and_validates_once(
    monkeypatch: pytest.MonkeyPatch, raw: str, region: str
) -> None:
    parses = _counting(monkeypatch, "_parse")
    validations = _counting(monkeypatch, "_is_valid")
    formats = _counting(monkeypatch, "_format")
    assert isinstance(normalize_phone(raw, region), PhoneOk)
    assert (parses[0], validations[0], formats[0]) == (1, 1, 1)


def test_letters_are_rejected_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    parses = _counting(monkeypatch, "_parse")
    assert normalize_phone("call me", "DE") == PhoneBad(R.NOT_A_NUMBER, "not a phone number")
    assert parses[0] == 0


def test_results_are_immutable() -> None:
    ok = normalize_phone("+4915123456789", "DE")
    with pytest.raises(AttributeError):
        ok.e164 = "+1"  # type: ignore[misc,union-attr]
