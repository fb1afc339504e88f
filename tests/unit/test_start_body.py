"""``POST /campaigns/{id}/start``'s ``at`` is the published date-time text, not a number."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.api import StartBody


@pytest.mark.parametrize("value", [0, 1_900_000_000, 1.5, True, [], {}])
def test_a_number_or_other_json_is_no_start_time(value: object) -> None:
    with pytest.raises(ValidationError, match="a date-time is text"):
        StartBody.model_validate({"at": value})


def test_text_with_a_zone_and_null_are_taken() -> None:
    at = StartBody.model_validate({"at": "2031-05-04T12:00:00+00:00"}).at
    assert at == datetime(2031, 5, 4, 12, tzinfo=UTC)
    assert StartBody.model_validate({"at": None}).at is None
    assert StartBody.model_validate({}).at is None
