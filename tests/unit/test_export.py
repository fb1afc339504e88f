"""Exported CSV cells cannot run as spreadsheet formulas."""

from __future__ import annotations

import pytest

from campaigns.services import campaign_contacts


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("+4915123456701", "+4915123456701"),
        ("-12", "-12"),
        ("Anna", "Anna"),
        ("", ""),
    ],
)
def test_neutralise_cell(value: str, expected: str) -> None:
    assert campaign_contacts.neutralise_cell(value) == expected
