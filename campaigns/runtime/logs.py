"""Process-wide logging: plain or JSON lines, phone numbers masked in every record.

The mask is a filter on the root handler, so it sees records of every logger that
propagates (ours, Celery's, httpx', uvicorn's once :func:`configure_logging` routes them to
the root). It rewrites the final message (``msg % args``) and the formatted traceback,
so a phone number passed as an argument, inside a dict or in an exception text is masked
the same way. Only the last 4 digits survive: enough to tell contacts apart in a support
case, not enough to message anyone.
"""

from __future__ import annotations

import json as _json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "PhoneMaskFilter", "configure_logging", "mask_phones"]

# E.164 and international formats ("+49 151 2345-6789", "+1 (415) 555 0100"), then bare runs
# of 8-15 digits (national numbers, wa_id values). Digits inside longer tokens such as UUIDs or
# hex are left alone: the run must not touch letters. Unix timestamps (10 digits) are masked
# too: a log line's own time is in its `ts` field.
_PHONE = re.compile(
    r"\+\d(?:(?:[\s.-]|\s?\(|\)\s?)?\d){6,14}(?!\d)"
    # Not the last group of a UUID ("...-9a55-123456789012") that happens to be all digits.
    r"|(?<![\w+])(?<![0-9a-fA-F]{4}-)\d{8,15}(?!\w)"
)
_DIGIT = re.compile(r"\d")
_KEEP = 4


def _mask_match(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    hide = digits - _KEEP
    out = []
    for char in text:
        if char.isdigit():
            out.append("*" if hide > 0 else char)
            hide -= 1
        elif char == "+":
            out.append(char)
        # Separators are dropped: "+49 151 ..." and "+49151..." mask alike.
    return "".join(out)


def mask_phones(text: str) -> str:
    """Every phone-like number in ``text`` with all but its last 4 digits as ``*``."""
    if not _DIGIT.search(text):
        return text
    return _PHONE.sub(_mask_match, text)


class PhoneMaskFilter(logging.Filter):
    """Masks phone numbers in the message, its args and the traceback of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log it raw rather than lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = mask_phones(message)
        record.args = None  # already merged into msg; nothing unmasked left behind
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_phones(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_phones(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, mask_phones(value))
        return True


# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in payload:
                payload[key] = value if _jsonable(value) else repr(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(payload, ensure_ascii=False, default=str)


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | dict)


_PLAIN = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
# Loggers that libraries give their own handlers (uvicorn's default config): routed to the
# root handler instead, so they get the same format and the same mask.
_ROUTED_TO_ROOT = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task")


def configure_logging(json: bool = False, level: int | str = logging.INFO) -> logging.Handler:
    """Installs one stderr handler on the root logger (replacing any); returns it.

    Idempotent: calling it again (e.g. the CLI, then a forked worker) leaves one handler.
    For uvicorn pass ``log_config=None`` to ``uvicorn.run`` so it does not reinstall its own.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(_PLAIN))
    handler.addFilter(PhoneMaskFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in _ROUTED_TO_ROOT:
        routed = logging.getLogger(name)
        for old in list(routed.handlers):
            routed.removeHandler(old)
        routed.propagate = True
    return handler
