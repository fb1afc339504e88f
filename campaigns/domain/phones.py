"""Phone number normalisation to E.164 for uploaded recipients.

The hot path of a million-row upload runs :func:`normalize_phone` once per row, so the common
case is exactly one ``phonenumbers.parse`` + ``is_valid_number`` + ``format_number`` with only
cheap string checks in front. Every repair (``00`` prefix, a lost ``+``, ``+0049...``, the
legacy Mexican mobile ``1``) runs only after that first attempt has failed or produced an
invalid number.

A number that lost its ``+`` (or ``00``), in any formatting ("1-202-555-0104", "230 5
2512345", Excel's "784951234567"), is read as international when all of these hold: it is
invalid for the campaign's region, it has no trunk ``0``, its national reading does not even
have a possible length for the region (so it cannot be a mistyped national number), and the
international reading is valid. It is accepted as that number with :attr:`PhoneOk.repaired`
saying what it was read as (stored with reason code ``repaired_international``). A number
whose national reading has a possible length stays refused as ambiguous, and its detail says
what the international reading would be.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import phonenumbers
from phonenumbers import (
    NumberParseException,
    PhoneNumber,
    PhoneNumberFormat,
    country_code_for_region,
)


class PhoneRejection(StrEnum):
    """Stable machine codes for a rejected phone; :attr:`message` is the operator text."""

    EMPTY = "empty_phone"
    NOT_A_NUMBER = "not_a_number"
    INVALID = "invalid_number"

    @property
    def message(self) -> str:
        return _REJECTION_MESSAGES[self]


_REJECTION_MESSAGES: Mapping[PhoneRejection, str] = {
    PhoneRejection.EMPTY: "empty phone",
    PhoneRejection.NOT_A_NUMBER: "not a phone number",
    PhoneRejection.INVALID: "not a valid number for its region",
}


REPAIRED_INTERNATIONAL = "repaired_international"
"""Reason code of a valid row whose number was read as international (its + was lost)."""


@dataclass(frozen=True, slots=True)
class PhoneOk:
    e164: str
    # Set when the number was read as international because its "+" or "00" was lost:
    # operator text, e.g. "read as the international number +1 202-555-0104".
    repaired: str | None = None


@dataclass(frozen=True, slots=True)
class PhoneBad:
    rejection: PhoneRejection
    detail: str  # operator text, e.g. "not a valid number for region DE"


# Bound once at import: attribute lookups on the module cost measurably at a million rows.
_parse = phonenumbers.parse
_is_valid = phonenumbers.is_valid_number
_format = phonenumbers.format_number
_E164 = PhoneNumberFormat.E164

# Any Unicode letter. Only consulted for non-ASCII input; ASCII uses the cheaper case test.
_HAS_LETTER = re.compile(r"[^\W\d_]").search
# What Excel shows for a long number in a "General" cell, e.g. "4.91512E+12" (or "4,91512E+12"
# in locales with a decimal comma). The trailing digits are gone for good.
_SCIENTIFIC = re.compile(r"[+-]?\d+(?:[.,]\d*)?[eE][+-]?\d+").fullmatch

_EMPTY = PhoneBad(PhoneRejection.EMPTY, PhoneRejection.EMPTY.message)
_NOT_A_NUMBER = PhoneBad(PhoneRejection.NOT_A_NUMBER, PhoneRejection.NOT_A_NUMBER.message)
_SCIENTIFIC_BAD = PhoneBad(
    PhoneRejection.NOT_A_NUMBER,
    "not a phone number: scientific notation (digits were lost in the spreadsheet; "
    "format the column as text and export again)",
)
_NO_COUNTRY_CODE = PhoneBad(
    PhoneRejection.NOT_A_NUMBER,
    "not a phone number: no country code and no usable default region",
)
_UNKNOWN_COUNTRY_CODE = PhoneBad(
    PhoneRejection.NOT_A_NUMBER, "not a phone number: unknown country code"
)
# A number that lost its "+" or "00": digits and the punctuation people type between them,
# starting with a digit other than a trunk "0" (country codes never start with 0).
_LOST_PLUS = re.compile(r"[(]?[1-9][\d\s().\-/\u2010-\u2015]*").fullmatch
_TOO_SHORT = PhoneBad(PhoneRejection.NOT_A_NUMBER, "not a phone number: too short")
_TOO_LONG = PhoneBad(PhoneRejection.NOT_A_NUMBER, "not a phone number: too long")

# Before 2019 Mexican mobiles were dialled from abroad as +52 1 + 10 digits; the "1" is gone
# and current metadata rejects numbers that still carry it.
_MX_COUNTRY_CODE = 52
_MX_LEGACY_MOBILE_MIN = 10_000_000_000  # "1" followed by a 10-digit national number
_MX_LEGACY_MOBILE_MAX = 19_999_999_999


def normalize_phone(raw: str, default_region: str) -> PhoneOk | PhoneBad:
    """Normalise ``raw`` to E.164, reading national numbers in ``default_region``.

    ``default_region`` is an upper-case ISO 3166 code, as phonenumbers expects ("DE", not "de").
    """
    s = raw.strip()  # str.strip() also removes NBSP and other Unicode spaces
    if not s:
        return _EMPTY
    if s[0] in "tT" and s[:4].lower() == "tel:":
        s = s[4:].lstrip()
        if not s:
            return _EMPTY
    # phonenumbers would silently read letters as vanity digits or drop them as an extension;
    # for uploaded recipients a letter means the cell holds something else.
    # (Every ASCII letter is cased, so the case test is exact and cheaper than the regex.)
    has_letter = s.upper() != s.lower() if s.isascii() else _HAS_LETTER(s) is not None
    if has_letter:
        return _SCIENTIFIC_BAD if _SCIENTIFIC(s) else _NOT_A_NUMBER

    # Excel's lost "+" on a number of the campaign's own country ("4915123456789" in DE): some
    # regions' rules also accept those digits as a (different!) national number, so the
    # international reading must win. A national number is written with its trunk "0".
    if s[0] != "0" and s.isdigit() and len(s) >= 10 and s.startswith(_own_code(default_region)):
        own = _parse_valid("+" + s)
        if own is not None:
            return own
    try:
        p = _parse(s, default_region)
    except NumberParseException as exc:
        return _repair(s, default_region, None, exc)
    if _is_valid(p):
        return PhoneOk(_format(p, _E164))
    return _repair(s, default_region, p, None)


@lru_cache(maxsize=512)
def _own_code(region: str) -> str:
    code = country_code_for_region(region)
    return str(code) if code else "\x00"  # unknown region: a prefix no digit string has


def _repair(
    s: str,
    default_region: str,
    first: PhoneNumber | None,
    error: NumberParseException | None,
) -> PhoneOk | PhoneBad:
    """The slow path: the first parse failed or gave an invalid number."""
    if first is not None:
        fixed = _mexican_legacy_mobile(first)
        if fixed is not None:
            return fixed

    # "00" is the international prefix in most of the world, but phonenumbers only knows that
    # when it is also the default region's prefix (not for US, whose prefix is 011).
    if s.startswith("00"):
        retry = _parse_valid("+" + s[2:])
        if retry is not None:
            return retry
    elif s[0] == "+":
        if s[1:2] == "0":  # "+0049 160 ...", "+049 ...": the + and the 00 both written
            retry = _parse_valid("+" + _digits(s).lstrip("0"))
            if retry is not None:
                return retry
    elif _LOST_PLUS(s) is not None:
        digits = _digits(s)
        retry = _parse_valid("+" + digits, repaired=True)
        if retry is not None:
            if first is not None and phonenumbers.is_possible_number(first):
                return _ambiguous(first, default_region, retry)
            return retry

    if first is None:
        return _parse_error(s, error)
    return _invalid(first, default_region)


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _ambiguous(first: PhoneNumber, default_region: str, international: PhoneOk) -> PhoneBad:
    """Invalid nationally, valid as international, but the national reading has a possible
    length: a mistyped national number is as likely as a lost "+", so it is refused."""
    national = _invalid(first, default_region)
    reading = (international.repaired or "").removeprefix("read as the international number ")
    return PhoneBad(
        national.rejection,
        f"{national.detail}; ambiguous: read as international it would be {reading} "
        "(write it with + if that is meant)",
    )


def _parse_error(s: str, error: NumberParseException | None) -> PhoneBad:
    kind = error.error_type if error is not None else None
    if kind == NumberParseException.INVALID_COUNTRY_CODE:
        return _UNKNOWN_COUNTRY_CODE if s[0] == "+" or s.startswith("00") else _NO_COUNTRY_CODE
    if kind in (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD):
        return _TOO_SHORT
    if kind == NumberParseException.TOO_LONG:
        return _TOO_LONG
    return _NOT_A_NUMBER


def _parse_valid(international: str, *, repaired: bool = False) -> PhoneOk | None:
    try:
        p = _parse(international, None)
    except NumberParseException:
        return None
    if _is_valid(p):
        return PhoneOk(_format(p, _E164), _repair_note(p) if repaired else None)
    return _mexican_legacy_mobile(p, repaired=repaired)


def _repair_note(p: PhoneNumber) -> str:
    return "read as the international number " + _format(p, PhoneNumberFormat.INTERNATIONAL)


def _mexican_legacy_mobile(p: PhoneNumber, *, repaired: bool = False) -> PhoneOk | None:
    nn = p.national_number
    if (
        p.country_code != _MX_COUNTRY_CODE
        or nn is None
        or not _MX_LEGACY_MOBILE_MIN <= nn <= _MX_LEGACY_MOBILE_MAX
    ):
        return None
    modern = PhoneNumber(country_code=_MX_COUNTRY_CODE, national_number=nn - _MX_LEGACY_MOBILE_MIN)
    if _is_valid(modern):
        return PhoneOk(_format(modern, _E164), _repair_note(modern) if repaired else None)
    return None


def _invalid(p: PhoneNumber, default_region: str) -> PhoneBad:
    cc = p.country_code
    if cc is None:
        return PhoneBad(PhoneRejection.INVALID, PhoneRejection.INVALID.message)
    # Name the region the operator chose when the number was read in it; otherwise the region
    # its country code belongs to (for shared codes such as +1 that is the main region, "US").
    if default_region and phonenumbers.country_code_for_region(default_region) == cc:
        region = default_region
    else:
        region = phonenumbers.region_code_for_country_code(cc)
    if region == phonenumbers.UNKNOWN_REGION:
        return PhoneBad(PhoneRejection.INVALID, f"not a valid number: unknown country code +{cc}")
    return PhoneBad(PhoneRejection.INVALID, f"not a valid number for region {region}")
