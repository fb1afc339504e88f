"""The one refusal contract: every request the system turns down says why, the same way.

A refusal carries a stable machine-readable ``code`` and a ``message`` for the operator,
and nothing was changed by the request that raised it. Its class says what kind of refusal
it is (``kind``); the HTTP API maps kinds to status codes in one table
(``campaigns.api.errors``) and the CLI prints the same ``{code, message}`` and exits 2.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class RefusalKind(StrEnum):
    INVALID = "invalid"  # the input is malformed or breaks a rule
    NOT_FOUND = "not_found"  # what it names does not exist
    CONFLICT = "conflict"  # legal input, illegal now (a command in the wrong state)
    BAD_FILE = "bad_file"  # an upload refused for its content
    TOO_LARGE = "too_large"  # over a size limit
    UNAUTHENTICATED = "unauthenticated"  # no or no valid credentials
    FORBIDDEN = "forbidden"  # credentials that do not allow this
    PRECONDITION_FAILED = "precondition_failed"  # a stale If-Match
    UNAVAILABLE = "unavailable"  # a part it needs is not configured or not reachable


class Refusal(Exception):
    """A request refused with a reason; nothing was changed."""

    default_kind: ClassVar[RefusalKind] = RefusalKind.INVALID

    def __init__(self, code: str, message: str, *, kind: RefusalKind | None = None) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.kind = kind or self.default_kind

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class NotFound(Refusal):
    default_kind = RefusalKind.NOT_FOUND

    def __init__(self, what: str, ident: int | str) -> None:
        super().__init__(f"{what}_not_found", f"{what} {ident} not found")
