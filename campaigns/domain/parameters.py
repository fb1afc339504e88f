"""Template parameter rules of the platform (pure).

- A text parameter holding a new-line, a tab or more than 4 consecutive spaces is refused
  with 132018 ("Param text cannot have new-line/tab characters or more than 4 consecutive
  spaces"). :func:`clean_parameter` collapses every whitespace run to one space and strips
  the ends; the payload builder applies it to every value it sends, so the stored (and
  exported) value stays as uploaded while every send is clean.
- A value longer than :data:`MAX_PARAMETER_CHARS` can never be sent: uploads store its row
  as ``invalid_record`` (:data:`PARAMETER_TOO_LONG`).
- Named template variables (``{{first_name}}``) are sent with ``parameter_name``; their names
  are lowercase letters, digits and underscores.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_PARAMETER_CHARS",
    "PARAMETER_TOO_LONG",
    "clean_parameter",
    "invalid_parameter_name",
    "parameter_too_long_reason",
]

# The platform documents 1,024 characters as the limit of a template body (and of a body
# text parameter when the template has more than its body); one value longer than the whole
# body can never fit. Campaigns do not know whether their template has a header or buttons,
# so the stricter documented limit applies.
MAX_PARAMETER_CHARS = 1024
PARAMETER_TOO_LONG = "parameter_too_long"

_NAME = re.compile(r"[a-z0-9_]+").fullmatch


def clean_parameter(value: str) -> str:
    """``value`` as the platform accepts it: each whitespace run (new-lines, tabs, runs of
    spaces, NBSP) one space, no leading or trailing whitespace."""
    return " ".join(value.split())


def parameter_too_long_reason(column: str, length: int) -> str:
    return (
        f"template variable {column!r} has {length:,} characters; the platform accepts at most "
        f"{MAX_PARAMETER_CHARS:,}"
    )


def invalid_parameter_name(name: str) -> bool:
    """True when ``name`` cannot be a named template variable (lowercase a-z, 0-9, _)."""
    return _NAME(name) is None
