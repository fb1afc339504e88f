"""Template parameter rules: what the platform refuses (132018) never leaves, limits hold."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.domain.parameters import (
    MAX_PARAMETER_CHARS,
    clean_parameter,
    invalid_parameter_name,
    parameter_too_long_reason,
)

# What the platform refuses: "Param text cannot have new-line/tab characters or more than 4
# consecutive spaces".
REFUSED = re.compile(r"[\n\t]| {5,}")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Anna", "Anna"),
        ("Anna\nMaria", "Anna Maria"),
        ("Anna\r\nMaria", "Anna Maria"),
        ("Anna\tMaria", "Anna Maria"),
        ("Anna     Maria", "Anna Maria"),
        ("Anna    Maria", "Anna Maria"),
        ("  20 %  ", "20 %"),
        ("a\u00a0\u2003b", "a b"),
        ("line one\n\nline two", "line one line two"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_clean_parameter(raw: str, clean: str) -> None:
    assert clean_parameter(raw) == clean


@given(st.text())
def test_a_clean_parameter_is_never_refused(raw: str) -> None:
    clean = clean_parameter(raw)
    assert REFUSED.search(clean) is None
    assert clean == clean.strip()
    assert clean_parameter(clean) == clean  # idempotent
    # only whitespace changed: every other character stays, in order
    assert [c for c in clean if not c.isspace()] == [c for c in raw if not c.isspace()]


def test_too_long_reason_names_the_column_and_the_limit() -> None:
    reason = parameter_too_long_reason("notes", 2000)
    assert "'notes'" in reason and "2,000" in reason and f"{MAX_PARAMETER_CHARS:,}" in reason


@pytest.mark.parametrize(
    ("name", "invalid"),
    [("first_name", False), ("code2", False), ("First Name", True), ("", True), ("näme", True)],
)
def test_named_variable_names(name: str, invalid: bool) -> None:
    assert invalid_parameter_name(name) is invalid
