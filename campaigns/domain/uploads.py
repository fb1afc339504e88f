"""The CPU side of an upload: records validated into ready-made COPY rows, in parse processes.

A chunk of records (:class:`~campaigns.domain.csv_intake.RecordBatch`, columns of plain
strings: cheap to pickle) goes to a parse process, which normalises every phone, checks the template
variables and formats each record as a line of ``COPY contacts ... FROM STDIN`` text. It also
settles duplicates inside the chunk (first occurrence wins). What needs the database - earlier
contacts of the campaign with the same number, opt-outs, lines a previous run already stored -
is settled in the ingest process by :meth:`StagedChunk.settle` before the rows are COPYed, so
the COPY goes straight into ``contacts`` with no staging table.

The parse processes come from a ``forkserver`` context: the ingest task runs in a threads-pool
Celery worker, and a plain ``fork`` taken while another thread holds a lock (logging, the
connection pool, Redis) can leave the child hung on that lock. The forkserver is a fresh
single-threaded process, so the pool is started once per process and kept warm.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from json.encoder import encode_basestring
from operator import add

from campaigns.domain.csv_intake import RecordBatch
from campaigns.domain.parameters import (
    MAX_PARAMETER_CHARS,
    PARAMETER_TOO_LONG,
    clean_parameter,
    parameter_too_long_reason,
)
from campaigns.domain.phones import REPAIRED_INTERNATIONAL, PhoneOk, normalize_phone

COPY_COLUMNS = (
    "campaign_id",
    "upload_id",
    "line_no",
    "phone_raw",
    "phone_e164",
    "variables",
    "state",
    "reason_code",
    "reason",
)
"""The columns of each staged row, in order (text COPY format)."""

DUPLICATE = "duplicate"
OPTED_OUT = "opted_out"
MISSING_VARIABLE = "missing_variable"
_VALID_TAIL = "initial\t\\N\t\\N\n"


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """What a parse process needs besides the records (small: pickled with every chunk)."""

    campaign_id: int
    upload_id: int
    region: str
    variable_names: tuple[str, ...]  # layout.variable_columns, the order of batch.values
    required: tuple[str, ...]  # template variables every row must fill


@dataclass(frozen=True)
class ChunkResult:
    valid: int
    invalid: int
    reasons: dict[str, int]


@dataclass(slots=True)
class StagedChunk:
    """A validated chunk: per record the head of its COPY line (up to and including the
    variables) and its tail (state, reason code, reason), kept apart so a row found to be a
    duplicate or opted out later only gets a new tail."""

    lines: list[int]
    heads: list[str]
    tails: list[str]
    codes: list[str | None]  # reason code per record, None for a valid one
    firsts: dict[str, int] = field(default_factory=dict)  # E.164 -> its first valid record
    repeats: list[tuple[int, str]] = field(default_factory=list)  # later ones: (index, E.164)

    @property
    def last_line(self) -> int:
        return self.lines[-1]

    def settle(
        self,
        upload_id: int,
        *,
        prior: Mapping[str, tuple[int, int]],
        opted_out: Collection[str],
        stored_lines: Collection[int] = (),
    ) -> ChunkResult:
        """Applies what the database knows; afterwards :meth:`copy_text` is final.

        ``prior``: E.164 -> (line, upload) of a live contact of the campaign with that number
        (an earlier chunk or upload: it wins). ``opted_out``: numbers that may not be messaged.
        ``stored_lines``: lines a previous run of this upload already stored (left out).
        """
        tails, codes, firsts = self.tails, self.codes, self.firsts
        for phone, (line, upload) in prior.items():
            index = firsts.get(phone)
            if index is not None:
                tails[index] = _duplicate_tail(line, upload, upload_id)
                codes[index] = DUPLICATE
        for index, phone in self.repeats:
            if phone in prior:  # point at the real first occurrence, not the chunk's first
                tails[index] = _duplicate_tail(*prior[phone], upload_id)
        for phone in opted_out:
            index = firsts.get(phone)
            if index is not None and phone not in prior:
                tails[index] = _invalid_tail(OPTED_OUT, "opted out")
                codes[index] = OPTED_OUT
        if stored_lines:
            keep = [i for i, line in enumerate(self.lines) if line not in stored_lines]
            self.lines = [self.lines[i] for i in keep]
            self.heads = [self.heads[i] for i in keep]
            self.tails = [tails[i] for i in keep]
            self.codes = [codes[i] for i in keep]
        counts = Counter(self.codes)
        valid = counts.pop(None, 0)
        reasons = {str(code): n for code, n in counts.items()}
        return ChunkResult(valid=valid, invalid=sum(reasons.values()), reasons=reasons)

    def copy_text(self) -> str:
        return "".join(map(add, self.heads, self.tails))


def stage_chunk(batch: RecordBatch, spec: ChunkSpec) -> StagedChunk:
    """Validates a chunk into COPY rows (runs in a parse process; pure CPU)."""
    prefix = f"{spec.campaign_id}\t{spec.upload_id}\t"
    region = spec.region
    names = spec.variable_names
    required = [(name, names.index(name)) for name in spec.required]
    # The variables JSON of a row whose values need neither JSON nor COPY escaping is the
    # template with the values put in as they are: the common case, and cheaper than encoding.
    keys = [encode_basestring(name) for name in names]
    template = "{" + ", ".join(f'{key.replace("%", "%%")}: "%s"' for key in keys) + "}"
    plain_template = not _special(template.replace('"', ""))
    lines = batch.lines
    heads: list[str] = []
    tails: list[str] = []
    codes: list[str | None] = []
    firsts: dict[str, int] = {}
    repeats: list[tuple[int, str]] = []
    rows = zip(*batch.values, strict=True) if batch.values else repeat((), len(lines))
    for index, (line, raw, values) in enumerate(zip(lines, batch.phones, rows, strict=True)):
        joined = "".join(values)
        if plain_template and not _special(joined):
            variables = template % values
        else:
            variables = _escape(_json_object(keys, values))
        result = normalize_phone(raw, region)
        if _special(raw):
            raw = _escape(raw)
        if not isinstance(result, PhoneOk):
            heads.append(f"{prefix}{line}\t{raw}\t\\N\t{variables}\t")
            tails.append(_invalid_tail(result.rejection.value, result.detail))
            codes.append(result.rejection.value)
            continue
        if required:
            missing = [name for name, j in required if _blank(values[j])]
            if missing:
                heads.append(f"{prefix}{line}\t{raw}\t\\N\t{variables}\t")
                tails.append(_invalid_tail(MISSING_VARIABLE, missing_variables_reason(missing)))
                codes.append(MISSING_VARIABLE)
                continue
            # All values together within the limit: none of them is over it (one len).
            if len(joined) > MAX_PARAMETER_CHARS and (too_long := _too_long(required, values)):
                heads.append(f"{prefix}{line}\t{raw}\t\\N\t{variables}\t")
                tails.append(_invalid_tail(PARAMETER_TOO_LONG, too_long))
                codes.append(PARAMETER_TOO_LONG)
                continue
        e164 = result.e164
        heads.append(f"{prefix}{line}\t{raw}\t{e164}\t{variables}\t")
        first = firsts.get(e164)
        if first is None:
            firsts[e164] = index
            tails.append(
                _VALID_TAIL if result.repaired is None else _repaired_tail(result.repaired)
            )
            codes.append(None)
        else:
            repeats.append((index, e164))
            tails.append(_invalid_tail(DUPLICATE, f"duplicate of line {lines[first]}"))
            codes.append(DUPLICATE)
    return StagedChunk(lines, heads, tails, codes, firsts, repeats)


def missing_variables_reason(missing: Sequence[str]) -> str:
    noun = "variable" if len(missing) == 1 else "variables"
    return f"missing template {noun}: {', '.join(missing)}"


def _too_long(required: list[tuple[str, int]], values: tuple[str, ...]) -> str | None:
    """The reason when a template variable's value is over the platform's limit (as sent:
    whitespace runs count once)."""
    for name, j in required:
        value = values[j]
        if len(value) > MAX_PARAMETER_CHARS:
            length = len(clean_parameter(value))
            if length > MAX_PARAMETER_CHARS:
                return parameter_too_long_reason(name, length)
    return None


def _repaired_tail(note: str) -> str:
    return f"initial\t{REPAIRED_INTERNATIONAL}\t{_escape(note)}\n"


def _json_object(keys: list[str], values: tuple[str, ...]) -> str:
    return "{" + ", ".join(map(add, keys, map(_json_value, values))) + "}"


def _json_value(value: str) -> str:
    return ": " + encode_basestring(value)


def _blank(value: str) -> bool:
    return not value or value.isspace()


def _duplicate_tail(line: int, upload: int, upload_id: int) -> str:
    reason = f"duplicate of line {line}"
    if upload != upload_id:
        reason += f" of upload {upload}"
    return _invalid_tail(DUPLICATE, reason)


def _invalid_tail(code: str, reason: str) -> str:
    return f"invalid_record\t{code}\t{_escape(reason)}\n"


# COPY text format: backslash, tab, newline and carriage return must be escaped in a value.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
# Anything JSON or COPY would escape: a quote, a backslash, a control character.
_special = re.compile(r'["\\\x00-\x1f]').search


def _escape(value: str) -> str:
    return value.translate(_COPY_ESCAPES) if _special(value) else value


# --------------------------------------------------------------------------- parse processes
