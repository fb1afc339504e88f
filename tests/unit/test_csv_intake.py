"""Sniffing and reading CSV files, through the functions ingest runs (sniff_layout, then
iter_record_batches); the row rules applied to the batches are tested in
test_ingest_staging.py."""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator, Sequence
from typing import BinaryIO, NamedTuple

import pytest

from campaigns.domain.csv_intake import (
    FALLBACK_ERRORS,
    HEAD_BYTES,
    CsvLayout,
    RefusalCode,
    UploadRefused,
    iter_record_batches,
    normalise_header,
    sniff_layout,
)

PHONE = "+4915123456789"


class RawRecord(NamedTuple):
    """One record of a batch, as the tests compare them."""

    line: int
    phone_raw: str
    variables: dict[str, str]


def iter_records(
    stream: BinaryIO,
    layout: CsvLayout,
    *,
    max_rows: int,
    start_after_line: int = 0,
    batch_rows: int = 3,
) -> Iterator[RawRecord]:
    """The records of ``iter_record_batches`` one by one (small batches: every test crosses
    batch boundaries)."""
    names = layout.variable_columns
    for batch in iter_record_batches(
        stream, layout, max_rows=max_rows, batch_rows=batch_rows, start_after_line=start_after_line
    ):
        for line, phone, *values in zip(batch.lines, batch.phones, *batch.values, strict=True):
            yield RawRecord(line, phone, dict(zip(names, values, strict=True)))


def sniff(
    data: bytes, *, phone_column: str | None = None, required: Sequence[str] = ()
) -> CsvLayout:
    return sniff_layout(data[:HEAD_BYTES], phone_column=phone_column, required_variables=required)


def read(
    data: bytes,
    layout: CsvLayout | None = None,
    *,
    max_rows: int = 1000,
    start_after_line: int = 0,
) -> list[RawRecord]:
    layout = layout or sniff(data)
    return list(
        iter_records(io.BytesIO(data), layout, max_rows=max_rows, start_after_line=start_after_line)
    )


def refusal(data: bytes, *, max_rows: int = 1000, start_after_line: int = 0) -> UploadRefused:
    with pytest.raises(UploadRefused) as info:
        read(data, max_rows=max_rows, start_after_line=start_after_line)
    assert str(info.value) == info.value.message
    return info.value


# --- encodings -------------------------------------------------------------------------------

TEXT = "phone,name\r\n+4915123456789,Müller €\r\n+4930123456,Zoë\r\n"


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (TEXT.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8-sig"),
        (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16"),
        (TEXT.encode("cp1252"), "cp1252"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-le-bom", "utf-16-be-bom", "cp1252"],
)
def test_encoding_is_detected_and_text_decoded(data: bytes, encoding: str) -> None:
    layout = sniff(data)
    assert layout == CsvLayout(
        encoding=encoding,
        delimiter=",",
        columns=("phone", "name"),  # no BOM left on the first name
        phone_index=0,
        variable_columns=("name",),
    )
    assert read(data, layout) == [
        RawRecord(2, "+4915123456789", {"name": "Müller €"}),
        RawRecord(3, "+4930123456", {"name": "Zoë"}),
    ]


def test_ascii_only_file_is_utf8() -> None:
    assert sniff(b"phone\n+4915123456789\n").encoding == "utf-8"


def test_head_cut_inside_a_multibyte_character_is_still_utf8() -> None:
    header = b"phone,name\n"
    filler_row = b"+4915123456789,x\n"
    body = header + filler_row * ((HEAD_BYTES - len(header) - 100) // len(filler_row))
    pad = HEAD_BYTES - 1 - len(body) - len(b"+4915123456789,")
    body += b"+4915123456789," + b"a" * pad
    data = body + "ü\n".encode()
    assert data[HEAD_BYTES - 1 : HEAD_BYTES + 1] == "ü".encode()  # split by the head
    layout = sniff(data)
    assert layout.encoding == "utf-8"
    assert read(data, layout, max_rows=10_000)[-1].variables["name"] == "a" * pad + "ü"


def test_stray_cp1252_bytes_after_the_head_are_decoded_as_cp1252() -> None:
    rows = [f"+4915123{i:06d},Müller".encode() for i in range(5000)]
    rows[4000] = b"+4915123999999,Caf\xe9 \x80 \x81"  # cp1252 é, €, and a cp1252 hole
    data = b"phone,name\n" + b"\n".join(rows) + b"\n"
    assert data.index(b"Caf\xe9") > HEAD_BYTES
    layout = sniff(data)
    assert layout.encoding == "utf-8"
    records = read(data, layout, max_rows=5000)
    assert len(records) == 5000
    assert records[4000] == RawRecord(4002, "+4915123999999", {"name": "Café € \x81"})
    assert records[3999].variables == {"name": "Müller"}
    assert records[4001].variables == {"name": "Müller"}  # nothing after it is lost


def test_fallback_error_handler_is_registered() -> None:
    assert b"caf\xe9 \x80".decode("utf-8", FALLBACK_ERRORS) == "café €"
    assert b"\x8d".decode("cp1252", FALLBACK_ERRORS) == "\x8d"


# --- delimiters and quoting ------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(delimiter: str) -> None:
    text = f"name{delimiter}phone{delimiter}city\nAnna{delimiter}{PHONE}{delimiter}Köln\n"
    layout = sniff(text.encode())
    assert layout.delimiter == delimiter
    assert layout.columns == ("name", "phone", "city")
    assert read(text.encode(), layout) == [RawRecord(2, PHONE, {"name": "Anna", "city": "Köln"})]


def test_semicolon_file_with_commas_in_values() -> None:
    data = "phone;name\n+4915123456789;Müller, Hans\n+4930123456;Meier, Eva\n".encode()
    layout = sniff(data)
    assert layout.delimiter == ";"
    assert [r.variables["name"] for r in read(data, layout)] == ["Müller, Hans", "Meier, Eva"]


def test_delimiter_missing_from_the_header_is_overruled() -> None:
    # csv.Sniffer guesses "," from the quoted list; the header line only has ";".
    data = b'phone;name;tags\n+4915123456781;Anna;vip,"new",x\n+4915123456782;Ben;old,"x",y\n'
    layout = sniff(data)
    assert (layout.delimiter, layout.columns) == (";", ("phone", "name", "tags"))
    assert read(data, layout)[0].variables == {"name": "Anna", "tags": 'vip,"new",x'}


def test_header_only_single_column_defaults_to_comma() -> None:
    data = b"phone\n+4915123456789\n"
    layout = sniff(data)
    assert (layout.delimiter, layout.columns) == (",", ("phone",))
    assert read(data, layout) == [RawRecord(2, PHONE, {})]


def test_quoted_fields_with_newlines_delimiters_and_quotes() -> None:
    data = (
        b"phone,note,name\r\n"
        b'+4915123456789,"line one\r\nline two, with comma\nand ""quotes""",Anna\r\n'
        b'+4930123456,"a;b|c",Ben\r\n'
    )
    assert read(data) == [
        RawRecord(
            2,
            PHONE,
            {"note": 'line one\r\nline two, with comma\nand "quotes"', "name": "Anna"},
        ),
        RawRecord(3, "+4930123456", {"note": "a;b|c", "name": "Ben"}),
    ]


def test_line_numbers_count_records_not_physical_lines() -> None:
    data = b'phone,note\n"+49 151\n23456789",x\n+4930123456,"a\n\n\nb"\n+4940123456,y\n'
    assert [(r.line, r.phone_raw) for r in read(data)] == [
        (2, "+49 151\n23456789"),
        (3, "+4930123456"),
        (4, "+4940123456"),
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_endings(newline: str) -> None:
    data = newline.join(["phone;name", f"{PHONE};A", "+4930123456;B", ""]).encode()
    layout = sniff(data)
    assert layout.delimiter == ";"
    assert [(r.line, r.variables["name"]) for r in read(data, layout)] == [(2, "A"), (3, "B")]


# --- columns ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "phone",
        "Phone Number",
        "Guest phone number",
        "MSISDN",
        "wa_id",
        "Telefon-Nummer",
        "Mobile.Phone",
        "WhatsApp Number",
        "whatsapp_phone",
        "Phone No",
        "Teléfono",
        "Número",
        "CELL",
        "Cell-Phone",
        "Handy",
        "Celular",
        "  tel  ",
        "Contact Number",
    ],
)
def test_phone_column_aliases(header: str) -> None:
    data = f"name,{header},city\nAnna,{PHONE},Köln\n".encode()
    layout = sniff(data)
    assert layout.phone_index == 1
    assert layout.columns == ("name", header.strip(), "city")
    assert layout.variable_columns == ("name", "city")


def test_first_phone_alias_in_column_order_wins() -> None:
    layout = sniff(f"Mobile,Phone\n{PHONE},+4930123456\n".encode())
    assert (layout.phone_index, layout.variable_columns) == (0, ("Phone",))


def test_generic_aliases_give_way_to_a_specific_phone_column() -> None:
    # "Number" / "Contact" often name something else; a real phone column elsewhere wins.
    layout = sniff(f"Contact,Number,Phone\nAnna,17,{PHONE}\n".encode())
    assert layout.phone_index == 2
    assert sniff(f"name,Contact\nAnna,{PHONE}\n".encode()).phone_index == 1


def test_explicit_phone_column_is_matched_normalised() -> None:
    data = f"phone,Handy Nr.,name\n+4930123456,{PHONE},Anna\n".encode()
    layout = sniff(data, phone_column="handy_nr")
    assert layout.phone_index == 1
    assert layout.variable_columns == ("phone", "name")
    assert read(data, layout) == [RawRecord(2, PHONE, {"phone": "+4930123456", "name": "Anna"})]


def test_variable_columns_skip_empty_names_and_keep_the_first_duplicate() -> None:
    data = f" first_name ,,phone,first_name, city \nAnna,x,{PHONE},Other,Köln\n".encode()
    layout = sniff(data)
    assert layout.columns == ("first_name", "", "phone", "first_name", "city")
    assert layout.variable_columns == ("first_name", "city")
    assert read(data, layout)[0].variables == {"first_name": "Anna", "city": "Köln"}


def test_normalise_header() -> None:
    assert normalise_header(" Telefon-Nummer ") == "telefonnummer"
    assert normalise_header("Guest_Phone.Number") == "guestphonenumber"
    assert normalise_header("Teléfono") == "telefono"


ALIASES = (
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
    "numero",
    "telefono",
    "celular",
    "number",
    "contact",
    "contactnumber",
)


@pytest.mark.parametrize("alias", ALIASES)
def test_every_alias_names_the_phone_column(alias: str) -> None:
    assert normalise_header(alias) == alias
    assert sniff(f"name,{alias}\nAnna,{PHONE}\n".encode()).phone_index == 1


def test_other_names_are_no_phone_column() -> None:
    for name in ("numbers", "phones", "contact_person", "e-mail"):
        assert sniff_refusal(f"{name}\nx\n".encode()).code is RefusalCode.NO_PHONE_COLUMN


# --- refusals --------------------------------------------------------------------------------


def test_refusal_codes_are_snake_case() -> None:
    assert [c.value for c in RefusalCode] == [
        "empty_file",
        "not_text",
        "no_header",
        "no_phone_column",
        "unknown_phone_column",
        "missing_variable_column",
        "too_many_rows",
        "malformed",
        "too_large",
        "too_many_columns",
    ]


def sniff_refusal(
    data: bytes, *, phone_column: str | None = None, required: Sequence[str] = ()
) -> UploadRefused:
    with pytest.raises(UploadRefused) as info:
        sniff(data, phone_column=phone_column, required=required)
    assert str(info.value) == info.value.message
    return info.value


@pytest.mark.parametrize(
    "data",
    [b"", b"  \r\n\n\t", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE + b"\x00 "],
)
def test_empty_file(data: bytes) -> None:
    refused = sniff_refusal(data)
    assert (refused.code, refused.message) == (RefusalCode.EMPTY_FILE, "the file is empty")


def test_binary_with_nul_bytes_is_not_text() -> None:
    refused = sniff_refusal(b"phone\n\x00\x01\x02\x03+4915123456789\n")
    assert refused.code is RefusalCode.NOT_TEXT
    assert refused.message.startswith("not a text file: it contains NUL bytes")


def test_xlsx_is_not_text_and_says_what_it_is() -> None:
    refused = sniff_refusal(b"PK\x03\x04\x14\x00\x06\x00" + b"x" * 100)
    assert refused.code is RefusalCode.NOT_TEXT
    assert "Excel workbook (.xlsx)" in refused.message
    assert "CSV UTF-8" in refused.message


def test_many_control_characters_are_not_text() -> None:
    refused = sniff_refusal(b"phone\n" + bytes(range(1, 9)) * 20 + b"\n")
    assert refused.code is RefusalCode.NOT_TEXT
    assert "160 control characters" in refused.message


def test_a_few_control_characters_are_tolerated() -> None:
    data = b"phone,name\n+4915123456789,a\x0cb\x1a\n"
    assert read(data) == [RawRecord(2, PHONE, {"name": "a\x0cb\x1a"})]


def test_nul_in_utf16_text_is_not_text() -> None:
    data = codecs.BOM_UTF16_LE + "phone\n\x00\x00\x00\n".encode("utf-16-le")
    assert sniff_refusal(data).code is RefusalCode.NOT_TEXT


def test_nul_byte_after_the_head_is_not_text() -> None:
    rows = b"".join(b"+4915123%06d\n" % i for i in range(6000))
    data = b"phone\n" + rows + b"+49151\x0023456789\n"
    layout = sniff(data)
    seen: list[int] = []
    with pytest.raises(UploadRefused) as info:
        seen.extend(r.line for r in iter_records(io.BytesIO(data), layout, max_rows=10_000))
    assert info.value.code is RefusalCode.NOT_TEXT
    assert "NUL byte" in info.value.message
    assert info.value.line == 6002  # the record holding the NUL
    assert "line 6002" in info.value.message
    assert seen == list(range(2, 6002))  # every record before it was read


def test_utf16_files_may_contain_zero_bytes() -> None:
    data = codecs.BOM_UTF16_LE + f"phone\n{PHONE}\n".encode("utf-16-le")
    assert b"\x00" in data
    assert read(data) == [RawRecord(2, PHONE, {})]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"\nphone\n+4915123456789\n",
            "no header: the first line must hold the column names (e.g. phone,first_name)",
        ),
        (
            b" , ,\n+4915123456789,a,b\n",
            "no header: the first line must hold the column names (e.g. phone,first_name)",
        ),
        (
            b"+49 151 23456789,Anna\n+4930123456,Ben\n",
            "no header: the first line looks like data (+49 151 23456789), not column names; "
            "add a first line with the column names (e.g. phone,first_name)",
        ),
    ],
)
def test_no_header(data: bytes, message: str) -> None:
    refused = sniff_refusal(data)
    assert (refused.code, refused.message, refused.line) == (RefusalCode.NO_HEADER, message, 1)


def test_no_phone_column() -> None:
    refused = sniff_refusal(b"a,b,c\n1,2,3\n")
    assert refused.code is RefusalCode.NO_PHONE_COLUMN
    assert refused.message == (
        "no phone column: expected one of phone, phone_number, mobile, msisdn, wa_id, "
        "whatsapp, telefon, cell, ... or --phone-column; found columns: a, b, c"
    )


def test_unknown_explicit_phone_column() -> None:
    # An explicit choice is not silently replaced by an alias.
    refused = sniff_refusal(b"phone,name\n1,2\n", phone_column="Handy Nr")
    assert refused.code is RefusalCode.UNKNOWN_PHONE_COLUMN
    assert refused.message == (
        "phone column 'Handy Nr' is not in the header; found columns: phone, name"
    )


def test_missing_variable_column() -> None:
    refused = sniff_refusal(b"phone,last_name\n1,2\n", required=["first_name"])
    assert refused.code is RefusalCode.MISSING_VARIABLE_COLUMN
    assert refused.message == (
        "no column for template variable first_name; found columns: phone, last_name"
    )


def test_missing_variable_columns_hint_at_near_misses() -> None:
    refused = sniff_refusal(b"phone,First Name\n1,2\n", required=["first_name", "code"])
    assert refused.code is RefusalCode.MISSING_VARIABLE_COLUMN
    assert refused.message == (
        "no column for template variables first_name, code; found columns: phone, First Name"
        " (column names must match exactly: rename 'First Name' to 'first_name')"
    )


def test_required_variables_present() -> None:
    layout = sniff(b"phone,first_name,code\n1,2,3\n", required=["code", "first_name"])
    assert layout.variable_columns == ("first_name", "code")


def test_malformed_header_is_refused_when_sniffing() -> None:
    refused = sniff_refusal(b'phone,"first" name\n+4915123456789,Anna\n')
    assert refused.code is RefusalCode.MALFORMED
    assert refused.message == (
        "malformed CSV at line 1: ',' expected after '\"'; check the quotes in that line"
    )


def test_too_many_rows() -> None:
    data = b"phone\n+4915123456781\n+4915123456782\n+4915123456783\n"
    layout = sniff(data)
    seen: list[int] = []
    records = iter_records(io.BytesIO(data), layout, max_rows=2, batch_rows=1)
    with pytest.raises(UploadRefused) as info:
        seen.extend(r.line for r in records)
    assert seen == [2, 3]  # refused late: what came before was read
    assert info.value.code is RefusalCode.TOO_MANY_ROWS
    assert info.value.message == (
        "too many rows: more than 2 records (line 4 is record 3); split the file"
    )


def test_blank_rows_do_not_count_toward_max_rows() -> None:
    data = b"phone,name\n+4915123456781,a\n\n,\n+4915123456782,b\n , \n,,,\n\n"
    assert [r.line for r in read(data, max_rows=2)] == [2, 5]


@pytest.mark.parametrize(
    ("data", "line", "detail"),
    [
        (
            b'phone,name\n+4915123456781,a\n+4915123456782,"unclosed\n+4915123456783,c\n',
            3,
            "a quoted field is never closed (a missing '\"')",
        ),
        (
            b'phone,name\n+4915123456781,"a" b\n',
            2,
            "',' expected after '\"'; check the quotes in that line",
        ),
        (
            b'phone;name\n+4915123456781;a\n\n+4915123456781;"a" b\n',
            4,
            "';' expected after '\"'; check the quotes in that line",
        ),
    ],
)
def test_malformed(data: bytes, line: int, detail: str) -> None:
    refused = refusal(data)
    assert refused.code is RefusalCode.MALFORMED
    assert refused.message == f"malformed CSV at line {line}: {detail}"
    assert refused.line == line


# --- records ---------------------------------------------------------------------------------


def test_blank_records_are_skipped_but_keep_their_line_numbers() -> None:
    data = b"phone,name\r\n\r\n+4915123456781,a\r\n,\r\n  ,\t\r\n+4915123456782,b\r\n"
    assert [(r.line, r.phone_raw) for r in read(data)] == [
        (3, "+4915123456781"),
        (6, "+4915123456782"),
    ]


def test_row_with_empty_phone_but_other_values_is_kept() -> None:
    assert read(b"phone,name\n,Anna\n") == [RawRecord(2, "", {"name": "Anna"})]


def test_short_rows_are_padded_and_long_rows_cut() -> None:
    data = b"name,phone,city\nAnna\nBen,+4930123456\nCarl,+4940123456,Bonn,extra,more\n"
    assert read(data) == [
        RawRecord(2, "", {"name": "Anna", "city": ""}),
        RawRecord(3, "+4930123456", {"name": "Ben", "city": ""}),
        RawRecord(4, "+4940123456", {"name": "Carl", "city": "Bonn"}),
    ]


def test_start_after_line_resumes() -> None:
    data = b'phone,note\n+4915123456781,a\n+4915123456782,"b\nb"\n\n+4915123456783,c\n'
    assert [r.line for r in read(data, start_after_line=3)] == [5]
    assert [r.line for r in read(data, start_after_line=1)] == [2, 3, 5]
    assert read(data, start_after_line=5) == []


def test_skipped_records_still_count_toward_max_rows() -> None:
    data = b"phone\n+4915123456781\n+4915123456782\n+4915123456783\n"
    refused = refusal(data, max_rows=2, start_after_line=3)
    assert refused.code is RefusalCode.TOO_MANY_ROWS


def test_header_only_yields_nothing() -> None:
    assert read(b"phone,name\n") == []
    assert read(b"phone,name") == []


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_reads_the_stream_incrementally_and_leaves_it_open() -> None:
    data = b"phone\n" + b"".join(b"+4915123%06d\n" % i for i in range(200_000))
    stream = CountingStream(data)
    batches = iter_record_batches(stream, sniff(data), max_rows=1_000_000, batch_rows=10_000)
    assert next(batches).lines[0] == 2
    assert 0 < stream.bytes_read < 1024 * 1024 < len(data)
    batches.close()  # type: ignore[attr-defined]
    assert not stream.closed
    stream.seek(0)
    again = iter_record_batches(stream, sniff(data), max_rows=1_000_000, batch_rows=10_000)
    assert sum(len(b.lines) for b in again) == 200_000
    assert not stream.closed


def test_batches_hold_the_records_in_columns_whatever_their_size() -> None:
    data = (
        b"name,phone,city,name\nAnna\n\nBen,+4930123456\n"
        b'Carl,+4940123456,"Bonn\nBeuel",x,extra\n,,,\nDora,+4950123456,Ulm,y\n'
    )
    layout = sniff(data)
    expected = [
        RawRecord(2, "", {"name": "Anna", "city": ""}),
        RawRecord(4, "+4930123456", {"name": "Ben", "city": ""}),
        RawRecord(5, "+4940123456", {"name": "Carl", "city": "Bonn\nBeuel"}),
        RawRecord(7, "+4950123456", {"name": "Dora", "city": "Ulm"}),
    ]
    for size in (1, 2, 3, 10):
        batches = list(
            iter_record_batches(io.BytesIO(data), layout, max_rows=1000, batch_rows=size)
        )
        assert [len(b.lines) for b in batches[:-1]] == [size] * (len(batches) - 1)
        assert batches[0].values[0][0] == "Anna"  # values[column][record]
        assert list(iter_records(io.BytesIO(data), layout, max_rows=1000, batch_rows=size)) == (
            expected
        )


def test_batches_resume_and_refuse_like_records() -> None:
    data = b"phone\n+4915123456781\n+4915123456782\n+4915123456783\n"
    layout = sniff(data)
    batches = iter_record_batches(
        io.BytesIO(data), layout, max_rows=10, batch_rows=10, start_after_line=2
    )
    assert [b.lines for b in batches] == [[3, 4]]
    with pytest.raises(UploadRefused) as info:
        list(iter_record_batches(io.BytesIO(data), layout, max_rows=2, batch_rows=1))
    assert info.value.code is RefusalCode.TOO_MANY_ROWS
