"""The upload preview from a file's head (pure): the upload's own layout and row rules."""

from __future__ import annotations

import codecs

from campaigns.domain.upload_preview import MAX_PREVIEW_ROWS, preview_head


def test_utf16_with_a_repaired_number_and_an_opt_in_column() -> None:
    text = "mobile\tfirst_name\topted_in\n4915123456701\tAnna\tyes\n+4915123456702\tBo\tperhaps\n"
    head = codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    preview = preview_head(head, complete=True, region="US", required_variables=["first_name"])
    assert (preview.encoding, preview.delimiter, preview.phone_column) == ("utf-16", "\t", "mobile")
    first, second = preview.rows
    assert (first.valid, first.phone_e164, first.reason_code) == (
        True,
        "+4915123456701",
        "repaired_international",
    )
    assert (second.valid, second.reason_code) == (False, "invalid_opted_in")


def test_a_cut_head_drops_its_last_record_and_a_whole_file_keeps_it() -> None:
    head = b"phone\n+4915123456701\n+49151234567"
    assert [r.line for r in preview_head(head, complete=False, region="DE").rows] == [2]
    whole = preview_head(head, complete=True, region="DE").rows
    assert [(r.line, r.valid) for r in whole] == [(2, True), (3, False)]


def test_rows_are_bounded_and_blank_records_skipped() -> None:
    head = b"phone\n\n" + b"".join(b"+49151234%05d\n" % n for n in range(200))
    preview = preview_head(head, complete=True, region="DE", rows=1000)
    assert len(preview.rows) == MAX_PREVIEW_ROWS and preview.rows[0].line == 3


def test_nothing_readable_is_one_problem() -> None:
    preview = preview_head(b"   \n", complete=True, region="DE")
    assert [p.code for p in preview.problems] == ["empty_file"]
    assert preview.columns == () and preview.rows == ()
