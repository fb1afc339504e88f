"""A file's first rows as an upload will read them, from its head alone (pure; stores nothing).

The console shows this before the first byte is uploaded (GOV.UK Notify's "check before you
send"): the detected encoding, delimiter and phone column, which column fills each template
variable, and the first records with what the upload will make of each (E.164 or the
reason it is refused). It reuses the upload's own steps (:func:`read_header`,
:func:`find_phone_column`, :func:`iter_record_batches`, :func:`check_record`), so the preview
and the upload cannot disagree on a file's layout; only what needs the database (duplicates
of earlier uploads, the contact registry) is left to the upload.

Where the upload would refuse the file, the preview says why as a *problem* and still shows
what it could read: a header without a phone column lists its columns, so the operator can
pick one.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from campaigns.domain.csv_intake import (
    CsvLayout,
    RefusalCode,
    UploadRefused,
    find_phone_column,
    iter_records,
    missing_variables_message,
    read_header,
    variable_columns,
)
from campaigns.domain.csv_limits import DEFAULT_MAX_FIELDS
from campaigns.domain.phones import REPAIRED_INTERNATIONAL
from campaigns.domain.uploads import DUPLICATE, check_record

PREVIEW_ROWS = 10
"""Records shown by default."""
MAX_PREVIEW_ROWS = 50


@dataclass(frozen=True, slots=True)
class PreviewProblem:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class PreviewRow:
    line: int
    cells: tuple[str, ...]  # padded to the header's width
    phone_e164: str | None = None
    valid: bool | None = None  # False: stored as invalid_record; None: no phone column
    reason_code: str | None = None  # repaired_international on a valid row
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Preview:
    encoding: str | None = None
    delimiter: str | None = None
    columns: tuple[str, ...] = ()
    phone_column: str | None = None
    variables: dict[str, str | None] = field(default_factory=dict)  # template var -> column
    rows: tuple[PreviewRow, ...] = ()
    problems: tuple[PreviewProblem, ...] = ()


def preview_head(
    head: bytes,
    *,
    complete: bool,
    region: str,
    phone_column: str | None = None,
    required_variables: Sequence[str] = (),
    rows: int = PREVIEW_ROWS,
    max_columns: int = DEFAULT_MAX_FIELDS,
) -> Preview:
    """The preview of a file whose first bytes are ``head``; ``complete`` when ``head`` is
    the whole file (else its last, perhaps cut, record is never shown)."""
    try:
        header = read_header(head, max_columns=max_columns)
    except UploadRefused as refused:
        return Preview(problems=(_problem(refused),))
    problems: list[PreviewProblem] = []
    try:
        phone_index: int | None = find_phone_column(header.columns, phone_column)
    except UploadRefused as refused:
        phone_index = None
        problems.append(_problem(refused))
    available = variable_columns(header.columns, phone_index)
    mapping: dict[str, str | None] = {
        name: name if name in available else None for name in required_variables
    }
    missing = [name for name, column in mapping.items() if column is None]
    if missing and phone_index is not None:
        problems.append(
            PreviewProblem(
                RefusalCode.MISSING_VARIABLE_COLUMN.value,
                missing_variables_message(missing, header.columns),
            )
        )
    layout = CsvLayout(
        encoding=header.encoding,
        delimiter=header.delimiter,
        columns=header.columns,
        # Without a phone column the records are still shown, cell by cell.
        phone_index=0 if phone_index is None else phone_index,
        variable_columns=available,
    )
    count = max(1, min(rows, MAX_PREVIEW_ROWS))
    records, refusal = _first_records(head, layout, complete, count, max_columns)
    if refusal is not None:
        problems.append(_problem(refusal))
    checked = _check(records, layout, phone_index, region, required_variables)
    return Preview(
        encoding=header.encoding,
        delimiter=header.delimiter,
        columns=header.columns,
        phone_column=None if phone_index is None else header.columns[phone_index],
        variables=mapping,
        rows=tuple(checked),
        problems=tuple(problems),
    )


def _problem(refused: UploadRefused) -> PreviewProblem:
    return PreviewProblem(refused.code.value, refused.message)


def _first_records(
    head: bytes, layout: CsvLayout, complete: bool, count: int, max_columns: int
) -> tuple[list[tuple[int, tuple[str, ...]]], UploadRefused | None]:
    """Up to ``count`` (line, cells) records, read by the upload's record reader.

    The reader stops as soon as it has one record more than asked for: a cut head is read
    to its end only when the file has fewer records, and then its last record (maybe cut)
    is dropped, as is a malformed-CSV refusal at that cut."""
    width = len(layout.columns)
    records = iter_records(io.BytesIO(head), layout, max_rows=count + 1, max_fields=max_columns)
    out: list[tuple[int, tuple[str, ...]]] = []
    refusal: UploadRefused | None = None
    try:
        for line, row in records:
            out.append((line, tuple(row[:width])))
            if len(out) > count:
                break
        else:
            if not complete and out:
                out.pop()  # the head may have cut it
    except UploadRefused as refused:
        if complete or refused.code is not RefusalCode.MALFORMED:
            refusal = refused
    finally:
        records.close()
    return out[:count], refusal


def _check(
    records: list[tuple[int, tuple[str, ...]]],
    layout: CsvLayout,
    phone_index: int | None,
    region: str,
    required: Sequence[str],
) -> list[PreviewRow]:
    if phone_index is None:
        return [PreviewRow(line, cells) for line, cells in records]
    names = layout.variable_columns
    wanted = [n for n in required if n in names]
    firsts: dict[str, int] = {}
    out = []
    for line, cells in records:
        values = {name: cells[layout.columns.index(name)] for name in names}
        e164, code, reason = check_record(cells[phone_index], region, values, wanted)
        if (code is None or code == REPAIRED_INTERNATIONAL) and e164 is not None:
            if e164 in firsts:
                code, reason = DUPLICATE, f"duplicate of line {firsts[e164]}"
            else:
                firsts[e164] = line
        valid = code is None or code == REPAIRED_INTERNATIONAL
        out.append(PreviewRow(line, cells, e164 if valid else None, valid, code, reason))
    return out
