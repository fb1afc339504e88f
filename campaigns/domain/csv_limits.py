"""The text lines :func:`campaigns.domain.csv_intake.iter_records` hands to ``csv.reader``,
read with a bound: a hostile file costs bounded memory, whatever its shape.

``csv.reader`` builds a whole record before it yields it: one line of 100 MB of commas
became a list of 100 million fields (928 MB in the ingest worker), and ``TextIOWrapper``
iteration first builds the 100 MB line itself. Here lines are read in pieces of
:data:`PIECE_CHARS` and every piece is counted against the record it belongs to before
the reader sees it:

- delimiters: more than :data:`DELIMITER_SLACK` times ``max_fields`` refuses the record
  (quoted text may hold delimiters, so this is a generous guard; the exact field count is
  checked on the parsed row by the caller);
- characters: a record longer than :data:`MAX_RECORD_CHARS` is refused;
- NUL: a file whose NUL bytes :class:`NulGuard` cannot see in
  the raw bytes (UTF-16, where every other byte is 0) is checked here, after decoding.

The caller calls :meth:`BoundedLines.record_done` after each record the reader yields
(``csv.reader`` reads no line ahead, so every line read so far belongs to finished records).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import BinaryIO

DEFAULT_MAX_FIELDS = 16_384
"""Fields per row (Excel's column limit): MAX_CSV_COLUMNS' default."""

MAX_RECORD_CHARS = 4 * 1024 * 1024
"""Characters in one record (all its physical lines); a contact row is a few hundred."""

DELIMITER_SLACK = 4
PIECE_CHARS = 64 * 1024


class RecordTooWide(Exception):
    """A record over a limit; ``what`` is "fields" or "characters"."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(what, limit)
        self.what = what
        self.limit = limit


class NulInText(Exception):
    """A NUL character in the decoded text."""


class BoundedLines(Iterator[str]):
    def __init__(
        self,
        readline: Callable[[int], str],
        *,
        delimiter: str,
        max_fields: int,
        check_nul: bool,
        max_record_chars: int = MAX_RECORD_CHARS,
    ) -> None:
        self._readline = readline
        self._delimiter = delimiter
        self._max_delimiters = DELIMITER_SLACK * max_fields
        self._max_chars = max_record_chars
        self._check_nul = check_nul
        self._pending = ""
        self._chars = 0
        self._delimiters = 0

    def record_done(self) -> None:
        self._chars = 0
        self._delimiters = 0

    def __iter__(self) -> BoundedLines:
        return self

    def __next__(self) -> str:
        piece = self._take()
        if not piece:
            raise StopIteration
        self._count(piece)
        if piece.endswith("\n"):
            return piece  # the common case: a whole line in one piece
        parts = [piece]
        while not piece.endswith(("\n", "\r")):  # a line longer than a piece, or the last
            piece = self._take()
            if not piece:
                break
            self._count(piece)
            parts.append(piece)
        if piece.endswith("\r"):
            # "\r\n" may have been cut between two reads: keep the pair in one line.
            ahead = self._take()
            if ahead.startswith("\n"):
                parts.append("\n")
                ahead = ahead[1:]
            self._pending = ahead
        return "".join(parts)

    def _take(self) -> str:
        if self._pending:
            piece, self._pending = self._pending, ""
            return piece
        return self._readline(PIECE_CHARS)

    def _count(self, piece: str) -> None:
        self._chars += len(piece)
        if self._chars > self._max_chars:
            raise RecordTooWide("characters", self._max_chars)
        self._delimiters += piece.count(self._delimiter)
        if self._delimiters > self._max_delimiters:
            raise RecordTooWide("fields", self._max_delimiters // DELIMITER_SLACK)
        if self._check_nul and "\x00" in piece:
            raise NulInText


class NulByte(Exception):
    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class NulGuard(io.BufferedIOBase):
    """Passes reads through, failing on a NUL byte (binary data) in a non-UTF-16 file.

    Checking the raw chunks (a memchr per 8 KiB) is much cheaper than checking every row.
    The bytes before a NUL are still delivered and the error raised on the next read, so the
    CSV reader fails in the record that holds the NUL and the reported line is exact.
    Never closes the wrapped stream: it belongs to the caller.
    """

    def __init__(self, stream: BinaryIO, *, check_nul: bool) -> None:
        super().__init__()
        self._stream = stream
        self._check_nul = check_nul
        self._offset = 0
        self._nul_at: int | None = None

    @property
    def name(self) -> str:  # TextIOWrapper's repr asks for it
        return str(getattr(self._stream, "name", "<upload>"))

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if self._nul_at is not None:
            raise NulByte(self._nul_at)
        data = self._stream.read(-1 if size is None else size)
        if self._check_nul:
            nul = data.find(b"\x00")
            if nul >= 0:
                self._nul_at = self._offset + nul
                if nul == 0:
                    raise NulByte(self._nul_at)  # b"" would read as end of file
                data = data[:nul]
        self._offset += len(data)
        return data

    def read1(self, size: int = -1, /) -> bytes:
        return self.read(size)
