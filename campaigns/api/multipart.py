"""A multipart upload streamed straight into the spool, counted as it arrives.

Starlette's ``request.form()`` spools file parts to a temporary file and its
``max_part_size`` does not apply to them: a multipart body of any size was written to disk
before the limit was looked at. Here python-multipart's streaming parser hands the bytes of
the ``file`` part to the :class:`~campaigns.services.uploads.SpoolWriter` as they arrive,
so the upload is refused (413) on the first byte over ``MAX_UPLOAD_BYTES``, and nothing is
kept but the spooled file. Other parts (form fields) are read and dropped, up to a small
bound each.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from campaigns.domain.csv_intake import RefusalCode, UploadRefused
from campaigns.services.uploads import SpoolWriter

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
FILE_FIELD = "file"
MAX_OTHER_PART_BYTES = 64 * 1024


@dataclass
class _State:
    writer: SpoolWriter
    header_name: bytes = b""
    header_value: bytes = b""
    disposition: bytes = b""
    in_file: bool = False
    other_bytes: int = 0
    files: int = 0
    filename: str | None = None


def _malformed(message: str) -> UploadRefused:
    return UploadRefused(RefusalCode.MALFORMED, f"malformed multipart body: {message}")


async def spool_multipart(
    content_type: str, body: AsyncIterator[bytes], writer: SpoolWriter
) -> str | None:
    """Writes the ``file`` part of a multipart body to ``writer``; returns its filename.

    Refuses a body without a ``file`` part, with two of them, or that does not parse.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise _malformed("no boundary in the Content-Type header")
    state = _State(writer)
    parser = MultipartParser(boundary, _callbacks(state))
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise _malformed(str(exc) or type(exc).__name__) from None
    if state.files == 0:
        raise UploadRefused(RefusalCode.EMPTY_FILE, "multipart body has no `file` part")
    return state.filename


def _callbacks(state: _State) -> MultipartCallbacks:
    def on_part_begin() -> None:
        state.disposition, state.in_file = b"", False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_name += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        if state.header_name.lower() == b"content-disposition":
            state.disposition = state.header_value
        state.header_name, state.header_value = b"", b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(state.disposition)
        if options.get(b"name") != FILE_FIELD.encode():
            return
        state.files += 1
        if state.files > 1:
            raise _malformed("more than one `file` part")
        state.in_file = True
        raw_name = options.get(b"filename")
        # A label from the client's file picker: control characters (NUL, which Postgres
        # text cannot hold, included) are dropped rather than refusing the file for them.
        name = _CONTROL.sub("", raw_name.decode("utf-8", "replace")) if raw_name else ""
        state.filename = name[:255] or None

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.in_file:
            state.writer.write(data[start:end])  # refuses past MAX_UPLOAD_BYTES at once
            return
        state.other_bytes += end - start
        if state.other_bytes > MAX_OTHER_PART_BYTES:
            raise _malformed(f"a form field is larger than {MAX_OTHER_PART_BYTES} bytes")

    def on_part_end() -> None:
        state.in_file, state.other_bytes = False, 0

    return {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
