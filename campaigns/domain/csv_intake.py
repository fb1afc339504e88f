"""Streaming CSV intake: sniff the layout from the file's head, then read records in batches.

Nothing here holds the whole file. :func:`sniff_layout` looks only at the first
:data:`HEAD_BYTES`; :func:`iter_record_batches` decodes the binary stream incrementally and
hands it to ``csv.reader`` (newline="" semantics, so quoted fields may contain newlines,
delimiters and doubled quotes). The row rules (phone, template variables, duplicates) are
applied to each batch by :func:`campaigns.domain.uploads.stage_chunk`.

:class:`UploadRefused` means the whole file is refused. :func:`iter_record_batches` can raise it
late (too many rows, a NUL byte, broken quoting) after it has yielded batches, so callers must
store records in a way they can discard (one transaction, or a staging area) until the stream
ends.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO, NamedTuple

from campaigns.domain.csv_limits import (
    DEFAULT_MAX_FIELDS,
    BoundedLines,
    NulByte,
    NulGuard,
    NulInText,
    RecordTooWide,
)
from campaigns.domain.refusals import Refusal, RefusalKind

HEAD_BYTES = 64 * 1024
"""How much of the file :func:`sniff_layout` expects to see."""

FALLBACK_ERRORS = "wa_cp1252_fallback"
"""Codec error handler: undecodable bytes are read as cp1252 (latin-1 where cp1252 has a hole).

A file that looks like UTF-8 in its head may still contain a stray cp1252 byte further down
(a row pasted from an old spreadsheet); this keeps that row readable instead of failing the
upload or dropping characters.
"""

_CP1252_OR_LATIN1: tuple[str, ...] = tuple(
    bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in range(256)
)


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join([_CP1252_OR_LATIN1[b] for b in bad]), exc.end


codecs.register_error(FALLBACK_ERRORS, _cp1252_fallback)

DELIMITERS = (",", ";", "\t", "|")


class RefusalCode(StrEnum):
    EMPTY_FILE = "empty_file"
    NOT_TEXT = "not_text"
    NO_HEADER = "no_header"
    NO_PHONE_COLUMN = "no_phone_column"
    UNKNOWN_PHONE_COLUMN = "unknown_phone_column"
    MISSING_VARIABLE_COLUMN = "missing_variable_column"
    TOO_MANY_ROWS = "too_many_rows"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    TOO_MANY_COLUMNS = "too_many_columns"


class UploadRefused(Refusal):
    """The whole file is refused; nothing from it may be stored."""

    default_kind = RefusalKind.BAD_FILE

    def __init__(self, code: RefusalCode, message: str, *, line: int | None = None) -> None:
        too_large = code is RefusalCode.TOO_LARGE
        super().__init__(code, message, kind=RefusalKind.TOO_LARGE if too_large else None)
        self.code: RefusalCode = code
        self.line = line  # the record the refusal points at, when there is one


@dataclass(frozen=True, slots=True)
class CsvLayout:
    encoding: str  # "utf-8", "utf-8-sig", "utf-16" or "cp1252"
    delimiter: str  # one of DELIMITERS
    columns: tuple[str, ...]  # header as written (stripped)
    phone_index: int
    variable_columns: tuple[str, ...]  # every other non-empty header name, in order


# --- header names ---------------------------------------------------------------------------

_HEADER_DROP = str.maketrans("", "", " _-.\t\xa0\u200b\ufeff")

# Generic words that often name some other column ("Number" of an order, a "Contact" person):
# they are used only when no specific phone column exists.
_WEAK_PHONE_ALIASES = frozenset({"number", "contact", "numero"})
_STRONG_PHONE_ALIASES = frozenset(
    {
        "phone",
        "phonenumber",
        "phoneno",
        "mobile",
        "mobilephone",
        "mobilenumber",
        "msisdn",
        "waid",
        "whatsapp",
        "whatsappnumber",
        "whatsappphone",
        "guestphonenumber",
        "telefon",
        "telefonnummer",
        "telephone",
        "tel",
        "cell",
        "cellphone",
        "handy",
        "telefono",
        "celular",
        "contactnumber",
    }
)
_ALIASES_FOR_HUMANS = "phone, phone_number, mobile, msisdn, wa_id, whatsapp, telefon, cell, ..."


def normalise_header(name: str) -> str:
    """Lower-case and drop spaces, "_", "-", "." (and accents), so "Telefon-Nummer" matches."""
    folded = name.strip().lower().translate(_HEADER_DROP)
    if folded.isascii():
        return folded
    # "Teléfono", "Número": compare without accents.
    decomposed = unicodedata.normalize("NFKD", folded)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# --- sniffing --------------------------------------------------------------------------------

_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SNIFF_CHARS = 16 * 1024
_PHONE_CHARS = re.compile(r"\+?[\d\s().\-/]+").fullmatch
_BINARY_SIGNATURES: Mapping[bytes, str] = {
    b"PK\x03\x04": "an Excel workbook (.xlsx) or ZIP archive",
    b"\xd0\xcf\x11\xe0": "an old Excel workbook (.xls)",
    b"%PDF": "a PDF document",
}
_SAVE_AS_CSV = "save the sheet as 'CSV UTF-8' and upload that"


def sniff_layout(
    head: bytes,
    *,
    phone_column: str | None,
    required_variables: Sequence[str] = (),
    max_columns: int = DEFAULT_MAX_FIELDS,
) -> CsvLayout:
    """Work out encoding, delimiter and columns from the first :data:`HEAD_BYTES` of a file."""
    header = read_header(head, max_columns=max_columns)
    columns = header.columns
    phone_index = find_phone_column(columns, phone_column)
    variables = variable_columns(columns, phone_index)
    missing = [v for v in required_variables if v not in variables]
    if missing:
        raise UploadRefused(
            RefusalCode.MISSING_VARIABLE_COLUMN,
            missing_variables_message(missing, columns),
            line=1,
        )
    return CsvLayout(
        encoding=header.encoding,
        delimiter=header.delimiter,
        columns=columns,
        phone_index=phone_index,
        variable_columns=variables,
    )


class CsvHeader(NamedTuple):
    encoding: str
    delimiter: str
    columns: tuple[str, ...]  # as written (stripped)


def read_header(head: bytes, *, max_columns: int = DEFAULT_MAX_FIELDS) -> CsvHeader:
    """Encoding, delimiter and header of a file's head; refuses what is no CSV at all."""
    encoding = _detect_encoding(head)
    text = _decode_head(head, encoding)
    if not text.strip():
        raise UploadRefused(RefusalCode.EMPTY_FILE, "the file is empty")
    _refuse_control_chars(text)

    delimiter = _sniff_delimiter(text)
    try:
        rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        header = next(rows, [])
    except csv.Error as exc:
        raise _malformed(exc, 1) from exc
    if len(header) > max_columns:
        raise _too_many_columns(1, max_columns)
    columns = tuple(c.replace("\ufeff", "").strip() for c in header)
    if not any(columns):
        raise UploadRefused(
            RefusalCode.NO_HEADER,
            "no header: the first line must hold the column names (e.g. phone,first_name)",
            line=1,
        )
    return CsvHeader(encoding, delimiter, columns)


def variable_columns(columns: tuple[str, ...], phone_index: int | None) -> tuple[str, ...]:
    """Every non-empty column name but the phone's, in order: the template variables a
    record may fill."""
    variables: list[str] = []
    for i, name in enumerate(columns):
        # A repeated name keeps its first column: a record maps each name to one value.
        if i != phone_index and name and name not in variables:
            variables.append(name)
    return tuple(variables)


def _detect_encoding(head: bytes) -> str:
    if not head:
        raise UploadRefused(RefusalCode.EMPTY_FILE, "the file is empty")
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for signature, what in _BINARY_SIGNATURES.items():
        if head.startswith(signature):
            raise UploadRefused(
                RefusalCode.NOT_TEXT, f"not a CSV file: this looks like {what}; {_SAVE_AS_CSV}"
            )
    if b"\x00" in head:
        raise UploadRefused(
            RefusalCode.NOT_TEXT,
            "not a text file: it contains NUL bytes (binary data, or UTF-16 without a "
            f"byte-order mark); {_SAVE_AS_CSV}",
        )
    try:
        # final=False: the head may end in the middle of a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


def _decode_head(head: bytes, encoding: str) -> str:
    decoder = codecs.getincrementaldecoder(encoding)(errors=FALLBACK_ERRORS)
    return decoder.decode(head, final=False)


def _refuse_control_chars(text: str) -> None:
    # Tolerate a few (a stray form feed, a DOS end-of-file mark); many means binary data.
    count = len(_CONTROL_CHARS.findall(text))
    if count > max(8, len(text) // 100) or "\x00" in text:
        raise UploadRefused(
            RefusalCode.NOT_TEXT,
            f"not a text file: it contains {count} control characters in its first "
            f"{len(text)} characters; {_SAVE_AS_CSV}",
        )


def _sniff_delimiter(text: str) -> str:
    sample = text[:_SNIFF_CHARS]
    cut = max(sample.rfind("\n"), sample.rfind("\r"))
    if cut > 0:
        sample = sample[:cut]  # drop a partial last line
    # The Sniffer splits lines on "\n" only; old Mac exports end lines with "\r".
    sample = sample.replace("\r\n", "\n").replace("\r", "\n")
    header_line = sample.split("\n", 1)[0]
    counts = {d: header_line.count(d) for d in DELIMITERS}
    try:
        sniffed: str | None = csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        sniffed = None
    if sniffed is not None and counts.get(sniffed):
        return sniffed
    # The Sniffer found nothing, or something the header line does not contain (a header
    # without any candidate is a single column, where "," is as good as any).
    best = max(DELIMITERS, key=counts.__getitem__)  # ties go to the earlier candidate
    return best if counts[best] else ","


def find_phone_column(columns: tuple[str, ...], phone_column: str | None) -> int:
    """The phone column's index: the one named, else the first with a phone-like name."""
    normalised = [normalise_header(c) for c in columns]
    if phone_column is not None and phone_column.strip():
        wanted = normalise_header(phone_column)
        if wanted and wanted in normalised:
            return normalised.index(wanted)
        raise UploadRefused(
            RefusalCode.UNKNOWN_PHONE_COLUMN,
            f"phone column {phone_column.strip()!r} is not in the header; "
            f"found columns: {_list_columns(columns)}",
            line=1,
        )
    for aliases in (_STRONG_PHONE_ALIASES, _WEAK_PHONE_ALIASES):
        for i, name in enumerate(normalised):
            if name in aliases:
                return i
    data_like = [c for c in columns if _looks_like_phone(c)]
    if data_like:
        raise UploadRefused(
            RefusalCode.NO_HEADER,
            f"no header: the first line looks like data ({data_like[0]}), not column names; "
            "add a first line with the column names (e.g. phone,first_name)",
            line=1,
        )
    raise UploadRefused(
        RefusalCode.NO_PHONE_COLUMN,
        f"no phone column: expected one of {_ALIASES_FOR_HUMANS} or --phone-column; "
        f"found columns: {_list_columns(columns)}",
        line=1,
    )


def _looks_like_phone(cell: str) -> bool:
    """A header cell that is really a phone number: the file has no header line."""
    return _PHONE_CHARS(cell) is not None and sum(c.isdigit() for c in cell) >= 6


def missing_variables_message(missing: list[str], columns: tuple[str, ...]) -> str:
    noun = "variable" if len(missing) == 1 else "variables"
    message = (
        f"no column for template {noun} {', '.join(missing)}; "
        f"found columns: {_list_columns(columns)}"
    )
    by_normalised = {normalise_header(c): c for c in reversed(columns) if c}
    near = [(v, by_normalised.get(normalise_header(v))) for v in missing]
    hints = [f"rename {col!r} to {var!r}" for var, col in near if col and col != var]
    if hints:
        message += " (column names must match exactly: " + "; ".join(hints) + ")"
    return message


def _list_columns(columns: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(c or '""' for c in columns[:limit])
    if len(columns) > limit:
        shown += f", ... ({len(columns) - limit} more)"
    return shown


# --- records ---------------------------------------------------------------------------------


class RecordBatch(NamedTuple):
    """Consecutive records in columns: cheap to pickle to a parse process.

    ``values[j][k]`` is the value of ``layout.variable_columns[j]`` in record ``k``.
    """

    lines: list[int]
    phones: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]


def iter_record_batches(
    stream: BinaryIO,
    layout: CsvLayout,
    *,
    max_rows: int,
    batch_rows: int,
    start_after_line: int = 0,
    max_fields: int = DEFAULT_MAX_FIELDS,
) -> Iterator[RecordBatch]:
    """The data records of ``stream`` (read from its start, header included),
    ``batch_rows`` at a time, in columns.

    Records with ``line <= start_after_line`` are skipped (resuming an interrupted upload) but
    still count toward ``max_rows``. Blank records are skipped and count toward nothing but the
    line numbers.
    """
    indices = [layout.columns.index(name) for name in layout.variable_columns]
    phone_index = layout.phone_index
    # Columns are filled value by value so that each row list dies at once: keeping the rows
    # (lists, tracked by the cycle collector) until the batch is full made the garbage
    # collector cost as much as reading the CSV.
    lines: list[int] = []
    phones: list[str] = []
    columns: list[list[str]] = [[] for _ in indices]
    targets = list(zip(columns, indices, strict=True))
    records = iter_records(
        stream, layout, max_rows=max_rows, start_after_line=start_after_line, max_fields=max_fields
    )
    for line, row in records:
        lines.append(line)
        phones.append(row[phone_index])
        for column, index in targets:
            column.append(row[index])
        if len(lines) >= batch_rows:
            yield RecordBatch(lines, tuple(phones), tuple(map(tuple, columns)))
            lines, phones = [], []
            columns = [[] for _ in indices]
            targets = list(zip(columns, indices, strict=True))
    if lines:
        yield RecordBatch(lines, tuple(phones), tuple(map(tuple, columns)))


def iter_records(
    stream: BinaryIO,
    layout: CsvLayout,
    *,
    max_rows: int,
    start_after_line: int = 0,
    max_fields: int = DEFAULT_MAX_FIELDS,
) -> Generator[tuple[int, list[str]], None, None]:
    """(line, row) of every non-blank record after ``start_after_line``; rows padded to the
    header's width (longer rows keep their extra fields, which no column name reaches).

    Lines reach the CSV reader through :class:`BoundedLines`: a record over ``max_fields``
    fields or ``MAX_RECORD_CHARS`` characters, or a NUL in UTF-16 text, refuses the file
    before the record is built."""
    width = len(layout.columns)
    phone_index = layout.phone_index
    padding = [""] * width
    lines = _bounded_lines(stream, layout, max_fields)
    line = 0  # records read so far; the header is line 1
    count = 0
    try:
        # strict: an unclosed quote is an error, not a field that swallows the following rows.
        reader = csv.reader(lines, delimiter=layout.delimiter, strict=True)
        header = next(reader, None)
        if header is None:
            return
        line = 1
        if len(header) > max_fields:  # a header longer than the head the upload was checked on
            raise _too_many_columns(1, max_fields)
        lines.record_done()
        for row in reader:
            lines.record_done()
            line += 1
            n = len(row)
            if n > max_fields:
                raise _too_many_columns(line, max_fields)
            if n < width:
                row += padding[n:]
            phone = row[phone_index]
            if (not phone or phone.isspace()) and _is_blank(row):
                continue
            count += 1
            if count > max_rows:
                raise UploadRefused(
                    RefusalCode.TOO_MANY_ROWS,
                    f"too many rows: more than {max_rows} records (line {line} is record "
                    f"{count}); split the file",
                    line=line,
                )
            if line <= start_after_line:
                continue
            yield line, row
    except (csv.Error, NulByte, NulInText, RecordTooWide) as exc:
        raise _read_refusal(exc, line + 1, max_fields) from exc


def _bounded_lines(stream: BinaryIO, layout: CsvLayout, max_fields: int) -> BoundedLines:
    # The guard sits between the wrapper and the caller's stream, so when the wrapper is
    # closed or collected only the guard closes and the caller's stream stays open.
    guard = NulGuard(stream, check_nul=layout.encoding != "utf-16")
    text = io.TextIOWrapper(guard, encoding=layout.encoding, errors=FALLBACK_ERRORS, newline="")
    return BoundedLines(
        text.readline,
        delimiter=layout.delimiter,
        max_fields=max_fields,
        check_nul=layout.encoding == "utf-16",
    )


def _read_refusal(exc: Exception, line: int, max_fields: int) -> UploadRefused:
    """The refusal for what stopped reading the record at ``line``."""
    if isinstance(exc, csv.Error):
        return _malformed(exc, line)
    if isinstance(exc, NulByte):
        return _nul_refusal(line, f" (byte {exc.offset})")
    if isinstance(exc, RecordTooWide) and exc.what == "fields":
        return _too_many_columns(line, max_fields)
    if isinstance(exc, RecordTooWide):
        return UploadRefused(
            RefusalCode.MALFORMED,
            f"malformed CSV at line {line}: the record is longer than {exc.limit:,} "
            "characters; probably a quoted field that is never closed",
            line=line,
        )
    return _nul_refusal(line, "")


def _nul_refusal(line: int, where: str) -> UploadRefused:
    return UploadRefused(
        RefusalCode.NOT_TEXT,
        f"not a text file: NUL byte in line {line}{where}; {_SAVE_AS_CSV}",
        line=line,
    )


def _too_many_columns(line: int, limit: int) -> UploadRefused:
    return UploadRefused(
        RefusalCode.TOO_MANY_COLUMNS,
        f"too many columns: line {line} has more than {limit:,} fields (MAX_CSV_COLUMNS); "
        "check the delimiter, or remove unused columns",
        line=line,
    )


def _is_blank(row: list[str]) -> bool:
    return all(not field or field.isspace() for field in row)


def _malformed(exc: csv.Error, line: int) -> UploadRefused:
    reason = str(exc)
    if "unexpected end of data" in reason:
        reason = "a quoted field is never closed (a missing '\"')"
    elif "field larger than field limit" in reason:
        reason = f"{reason}; probably a quoted field that is never closed"
    else:
        reason = f"{reason}; check the quotes in that line"
    return UploadRefused(
        RefusalCode.MALFORMED, f"malformed CSV at line {line}: {reason}", line=line
    )
