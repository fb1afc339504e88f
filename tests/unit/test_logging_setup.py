"""Log setup: phone numbers masked everywhere a record carries text; JSON lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from campaigns.runtime.logs import (
    JsonFormatter,
    PhoneMaskFilter,
    configure_logging,
    mask_phones,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sent to +4915123456789", "sent to +*********6789"),
        ("sent to +49 151 2345-6789 ok", "sent to +*********6789 ok"),
        ("call +1 (415) 555-0100", "call +*******0100"),
        ("wa_id=4915123456789", "wa_id=*********6789"),
        ("national 015123456789.", "national ********6789."),
        ("phone:'01512345678'", "phone:'*******5678'"),
        ("id-4915123456789", "id-*********6789"),
    ],
)
def test_phone_numbers_keep_only_their_last_four_digits(text: str, expected: str) -> None:
    assert mask_phones(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "campaign 42 claimed 500 contacts in 0.25 s",
        "attempt 3f2a9c1e-0b7d-4c11-9a55-123456789012",  # digits inside a UUID
        "upload 1234567 rows",  # 7 digits: a count, not a phone
        "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABEYEjQ2",
        "error 132001: template does not exist",
        "12345678901234567890 is too long to be a phone",
    ],
)
def test_other_numbers_are_left_alone(text: str) -> None:
    assert mask_phones(text) == text


def _record(msg: object, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args or None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_filter_masks_the_merged_message_and_clears_args() -> None:
    record = _record("sent %s to %s (%d)", "hello", "+4915123456789", 4915123456789)
    assert PhoneMaskFilter().filter(record) is True
    assert record.getMessage() == "sent hello to +*********6789 (*********6789)"
    assert record.args is None


def test_filter_masks_dict_args_extras_and_tracebacks() -> None:
    record = _record("contact %(phone)s", {"phone": "+4915123456789"}, recipient="4915123456789")
    try:
        raise ValueError("bad number +4915123456789")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    PhoneMaskFilter().filter(record)
    assert record.getMessage() == "contact +*********6789"
    assert record.__dict__["recipient"] == "*********6789"
    assert record.exc_text is not None
    assert "ValueError: bad number +*********6789" in record.exc_text
    assert "4915123456789" not in record.exc_text


def test_json_formatter_writes_one_object_per_line_with_extras() -> None:
    record = _record("hello %s", "world", campaign_id=7)
    record.exc_info = None
    line = JsonFormatter().format(record)
    assert "\n" not in line
    payload = json.loads(line)
    assert payload["message"] == "hello world"
    assert payload["level"] == "INFO"
    assert payload["logger"] == "t"
    assert payload["campaign_id"] == 7
    assert payload["ts"].endswith("+00:00")


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    uvicorn = logging.getLogger("uvicorn.access")
    uv_handlers, uv_propagate = list(uvicorn.handlers), uvicorn.propagate
    uv_level, uv_disabled = uvicorn.level, uvicorn.disabled
    # Another test in this process may have run uvicorn's own logging config.
    uvicorn.setLevel(logging.NOTSET)
    uvicorn.disabled = False
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    uvicorn.handlers[:] = uv_handlers
    uvicorn.propagate = uv_propagate
    uvicorn.setLevel(uv_level)
    uvicorn.disabled = uv_disabled


@pytest.mark.usefixtures("root_restored")
def test_configure_logging_json_masks_every_logger_and_is_idempotent() -> None:
    # A library logger with its own handler (like uvicorn's default config) gets routed too.
    access = logging.getLogger("uvicorn.access")
    stray = io.StringIO()
    access.addHandler(logging.StreamHandler(stray))
    access.propagate = False

    configure_logging(json=True, level="debug")
    handler = configure_logging(json=True, level="debug")
    root = logging.getLogger()
    assert root.handlers == [handler]
    assert root.level == logging.DEBUG

    out = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    logging.getLogger("campaigns.services.dispatch.send").info("sent to %s", "+4915123456789")
    access.info('GET /campaigns?phone=4915123456789 HTTP/1.1" 200')
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "sent to +*********6789",
        'GET /campaigns?phone=*********6789 HTTP/1.1" 200',
    ]
    assert stray.getvalue() == ""
    assert "4915123456789" not in out.getvalue()


@pytest.mark.usefixtures("root_restored")
def test_configure_logging_plain_text() -> None:
    handler = configure_logging(json=False, level=logging.WARNING)
    out = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    log = logging.getLogger("campaigns.x")
    log.info("not shown")
    log.warning("paused: %s", "+4915123456789")
    text = out.getvalue()
    assert "not shown" not in text
    assert "WARNING campaigns.x" in text
    assert text.rstrip().endswith("paused: +*********6789")
