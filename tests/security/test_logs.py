"""Logs: no token in the access log (query string or header), phones masked in national
formats and inside dict/list extras."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine

from campaigns.runtime.logs import JsonFormatter, PhoneMaskFilter, configure_logging, scrub
from tests.conftest import API_TOKEN
from tests.security.support import serving

SECRET = "Sup3rSecretTok3nValue-0123456789abcdef"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """The process's real logging setup (configure_logging), writing to a buffer."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    names = ("uvicorn", "uvicorn.access")
    routed = {n: (logging.getLogger(n).propagate, logging.getLogger(n).level) for n in names}
    handler = configure_logging(json=False)
    for name in names:  # as `wa-campaigns serve` runs it (log_level="info"), whatever an
        logging.getLogger(name).setLevel(logging.INFO)  # earlier test's server left behind
    buffer = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, (propagate, level) in routed.items():
            logging.getLogger(name).propagate = propagate
            logging.getLogger(name).setLevel(level)


def test_the_access_log_never_holds_a_token(db: Engine, captured_logs: io.StringIO) -> None:
    with serving() as base, httpx.Client(base_url=base, timeout=30) as client:
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        assert client.get(f"/campaigns?token={SECRET}&limit=5", headers=auth).status_code == 200
        client.get(f"/dashboard?access_token={SECRET}")
        client.get(
            "/webhooks/whatsapp",
            params={"hub.mode": "subscribe", "hub.verify_token": SECRET, "hub.challenge": "1"},
        )
        client.get(f"/campaigns?api_key={SECRET}", headers={"Authorization": f"Bearer {SECRET}"})
    logs = captured_logs.getvalue()
    access = [line for line in logs.splitlines() if "uvicorn.access" in line]
    assert len(access) >= 4, logs
    assert any("token=[redacted]&limit=5" in line for line in access), access
    assert any("hub.verify_token=[redacted]" in line for line in access), access
    assert SECRET not in logs and API_TOKEN not in logs


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_authorization_values_in_messages_and_extras_are_redacted() -> None:
    record = _record(
        "headers %s", {"authorization": f"Bearer {SECRET}"}, request={"auth": f"Bearer {SECRET}"}
    )
    PhoneMaskFilter().filter(record)
    formatted = JsonFormatter().format(record)
    assert SECRET not in formatted
    assert "[redacted]" in formatted


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("030 1234 5678", "5678"),
        ("(415) 555-0100", "0100"),
        ("415-555-0100", "0100"),
        ("415.555.0100", "0100"),
        ("0151/2345-6789", "6789"),
        ("089 12345678", "5678"),
        ("+49 151 2345 6789", "6789"),
    ],
)
def test_national_formats_are_masked(raw: str, kept: str) -> None:
    masked = scrub(f"sending to {raw} now")
    assert raw not in masked
    assert masked.endswith(f"{kept} now")
    assert sum(c.isdigit() for c in masked) == 4


@pytest.mark.parametrize(
    "text",
    [
        "2026-07-01 09:00:00",
        "2026-07-01T09:00:00+02:00",
        "127.0.0.1:8000",
        "10.0.0.12",
        "version 0.115.2",
        "send window 09:00-20:00",
        "upload 12 line 3 took 0.25 s",
    ],
)
def test_dates_addresses_and_versions_stay_readable(text: str) -> None:
    assert scrub(text) == text


def test_phones_inside_dict_and_list_extras_are_masked() -> None:
    record = _record(
        "batch",
        contacts=["030 1234 5678", {"to": "(415) 555-0100", "nested": ["+4915123456789"]}],
        lookup={"+4915123456789": "030 1234 5678"},
    )
    PhoneMaskFilter().filter(record)
    payload = json.loads(JsonFormatter().format(record))
    flat = json.dumps(payload)
    for raw in ("030 1234 5678", "(415) 555-0100", "4915123456789", "1234 5678"):
        assert raw not in flat, flat
    assert payload["contacts"][0] == "*******5678"
    assert payload["contacts"][1]["nested"] == ["+*********6789"]
