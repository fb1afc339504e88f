"""Process-wide logging: plain or JSON lines, phone numbers masked and secrets redacted.

The mask is a filter on the root handler, so it sees records of every logger that
propagates (ours, Celery's, httpx', uvicorn's once :func:`configure_logging` routes them to
the root). It rewrites the final message (``msg % args``), the formatted traceback and
every ``extra=`` value (strings inside dicts and lists too), so a phone number passed as
an argument, inside a dict or in an exception text is masked the same way. Only the last
4 digits survive: enough to tell contacts apart in a support case, not enough to message
anyone.

Secrets are redacted the same way: a ``token=`` / ``access_token=`` / ``verify_token=`` (or
secret, password, api_key, signature) value in a URL's query string, and the credentials of
an ``Authorization`` header or a ``Bearer`` token. uvicorn's access log writes the full
request target, so a token someone put in a query string would otherwise land in the logs.
"""

from __future__ import annotations

import json as _json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "JsonFormatter",
    "PhoneMaskFilter",
    "configure_logging",
    "mask_phones",
    "redact_secrets",
    "scrub",
]

# E.164 and international formats ("+49 151 2345-6789", "+1 (415) 555 0100"), then bare runs
# of 8-15 digits (national numbers, wa_id values). Digits inside longer tokens such as UUIDs or
# hex are left alone: the run must not touch letters. Unix timestamps (10 digits) are masked
# too: a log line's own time is in its `ts` field.
_PHONE = re.compile(
    r"\+\d(?:(?:[\s.-]|\s?\(|\)\s?)?\d){6,14}(?!\d)"
    # Not the last group of a UUID ("...-9a55-123456789012") that happens to be all digits.
    r"|(?<![\w+])(?<![0-9a-fA-F]{4}-)\d{8,15}(?!\w)"
    # National formats with separators: an area code in parentheses ("(415) 555-0100"),
    r"|(?<![\w+(])\(\d{2,5}\)[\s.-]?\d{2,5}(?:[\s./-]\d{2,5}){0,3}(?![\w-])"
    # a trunk prefix 0 ("030 1234 5678", "0151/2345-6789"),
    r"|(?<![\w+.:/-])0\d{1,4}(?:[\s./-]\d{2,8}){1,4}(?![\w-]|[.:/]\d)"
    # and North America's 3-3-4 ("415-555-0100", "415.555.0100"); an ISO date has 4-2-2.
    r"|(?<![\w+.:/-])\d{3}[\s.-]\d{3}[\s.-]\d{4}(?![\w-]|[.:/]\d)"
)
_MIN_NATIONAL_DIGITS = 7
_DIGIT = re.compile(r"\d")
_KEEP = 4


def _mask_match(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if digits < _MIN_NATIONAL_DIGITS:
        return text  # "(12) 34": too short to be a phone number
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


# A query parameter whose name says it holds a secret: token, access_token, hub.verify_token,
# api_key, client_secret, password, signature, ... Its value runs to the next & or the end.
_SECRET_PARAM = re.compile(
    r"(?i)([?&;][\w.\-\[\]]*?"
    r"(?:token|secret|passw(?:or)?d|api[_-]?key|apikey|signature|auth|credential)"
    r"[\w.\-\[\]]*=)[^&;\s\"'#]+"
)
# An Authorization header (any scheme) or a bare "Bearer <token>".
_AUTH_HEADER = re.compile(
    r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=,]\s*[\"']?)[^\s\"',}]+(?:\s+[^\s\"',}]+)?"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+")
_REDACTED = "[redacted]"


def redact_secrets(text: str) -> str:
    """``text`` with query-string secrets and Authorization / Bearer credentials redacted."""
    if "=" in text:
        text = _SECRET_PARAM.sub(rf"\g<1>{_REDACTED}", text)
    lowered = text.lower()
    if "authorization" in lowered:
        text = _AUTH_HEADER.sub(rf"\g<1>{_REDACTED}", text)
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\g<1>{_REDACTED}", text)
    return text


def scrub(value: Any) -> Any:
    """Phones masked and secrets redacted in a string, or in every string of a dict/list/tuple."""
    if isinstance(value, str):
        return mask_phones(redact_secrets(value))
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(scrub(v) for v in value)
    return value


class PhoneMaskFilter(logging.Filter):
    """Masks phone numbers and redacts secrets in the message, its args, the traceback and
    the extras of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log it raw rather than lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = scrub(message)
        record.args = None  # already merged into msg; nothing unmasked left behind
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, scrub(value))
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
