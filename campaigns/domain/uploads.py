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
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import compress, repeat
from json.encoder import encode_basestring
from operator import add

from campaigns.domain.csv_intake import RecordBatch
from campaigns.domain.parameters import (
    MAX_PARAMETER_CHARS,
    PARAMETER_TOO_LONG,
    clean_parameter,
    parameter_too_long_reason,
)
from campaigns.domain.phones import REPAIRED_INTERNATIONAL, PhoneBad, PhoneOk, normalize_phone
from campaigns.domain.profile_docs import PROFILE_INVALID, ProfileColumns, ProfileStager
from campaigns.domain.registry import (
    INVALID_OPT_IN,
    OPT_IN_REASON,
    SUPPRESSION_REASONS,
    Standing,
    Suppression,
    is_opt_in_column,
    opt_in_value,
    suppression,
)

COPY_COLUMNS = (
    "campaign_id",
    "upload_id",
    "line_no",
    "phone_raw",
    "phone_e164",
    "person_id",
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
    opt_in_index: int | None = None  # the opted_in column among variable_names, if any
    profile: ProfileColumns | None = None  # columns that fill profiles, private ones


@dataclass(frozen=True)
class ChunkResult:
    valid: int
    invalid: int
    reasons: dict[str, int]


@dataclass(slots=True)
class StagedChunk:
    """A validated chunk: per record the head of its COPY line (up to and including the
    variables, with the person id: the number's digits) and its tail (state, reason code,
    reason), kept apart so a row found to be a duplicate or refused by the registry later
    only gets a new tail."""

    lines: list[int]
    heads: list[str]
    tails: list[str]
    codes: list[str | None]  # reason code per record, None for a valid one
    firsts: dict[str, int] = field(default_factory=dict)  # E.164 -> its first valid record
    repeats: list[tuple[int, str]] = field(default_factory=list)  # later ones: (index, E.164)
    opt_ins: dict[str, bool] = field(default_factory=dict)  # E.164 -> its opted_in cell
    patches: dict[str, str] = field(default_factory=dict)  # E.164 -> its profile cells (JSON)
    # E.164 -> template variables its cells leave to the stored profile (checked in settle)
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    profiles: str | None = None  # after settle: {"<person id>": patch, ...} to write, if any

    @property
    def last_line(self) -> int:
        return self.lines[-1]

    def keep_profile(self, phone: str, patch: str | None, needs: tuple[str, ...]) -> None:
        if patch is not None:
            self.patches[phone] = patch
        if needs:
            self.needs[phone] = needs

    def settle(
        self,
        upload_id: int,
        *,
        prior: Mapping[str, tuple[int, int]],
        standings: Mapping[str, Standing],
        require_opt_in: bool = False,
        stored_lines: Collection[int] = (),
        filled: Mapping[str, frozenset[str]] | None = None,
    ) -> ChunkResult:
        """Applies what the database knows; afterwards :meth:`copy_text` is final.

        ``prior``: E.164 -> (line, upload) of a live contact of the campaign with that number
        (an earlier chunk or upload: it wins). ``standings``: what the registry holds of the
        chunk's people (the others have no record that refuses them); with this upload's
        ``opted_in`` cells they decide :func:`~campaigns.domain.registry.suppression`.
        ``stored_lines``: lines a previous run of this upload already stored (left out).
        ``filled``: of the people in :attr:`needs`, the fields their stored profile fills
        (a record whose template variable is in neither its file nor its profile is
        ``missing_variable``). Afterwards :attr:`profiles` holds the profile patches to write.
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
        for reason, index in self._refused(standings, require_opt_in, prior):
            tails[index] = _invalid_tail(reason, SUPPRESSION_REASONS[reason])
            codes[index] = reason.value
        self._check_needs(filled or {})
        self.profiles = self._profile_patches(upload_id, prior, stored_lines)
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

    def _refused(
        self,
        standings: Mapping[str, Standing],
        require_opt_in: bool,
        prior: Mapping[str, tuple[int, int]],
    ) -> list[tuple[Suppression, int]]:
        """(reason, index) of each first record the registry refuses (a duplicate stays one).

        Only people with a record that may refuse them are in ``standings``; without
        ``require_opt_in`` nobody else can be refused, so only those are looked at."""
        if require_opt_in:
            phones: Collection[str] = self.firsts
        else:
            phones = standings
        out: list[tuple[Suppression, int]] = []
        opt_ins = self.opt_ins
        for phone in phones:
            index = self.firsts.get(phone)
            if index is None or phone in prior:
                continue
            standing = standings.get(phone, _NOBODY)
            if phone in opt_ins and not standing.opted_out:
                standing = replace(standing, opted_in=opt_ins[phone])
            reason = suppression(standing, require_opt_in=require_opt_in)
            if reason is not None:
                out.append((reason, index))
        return out

    def _check_needs(self, filled: Mapping[str, frozenset[str]]) -> None:
        for phone, names in self.needs.items():
            index = self.firsts[phone]
            missing = [name for name in names if name not in filled.get(phone, ())]
            if missing and self.codes[index] is None:
                reason = (
                    f"{missing_variables_reason(missing)} (neither in the file nor the profile)"
                )
                self.tails[index] = _invalid_tail(MISSING_VARIABLE, reason)
                self.codes[index] = MISSING_VARIABLE

    def _profile_patches(
        self,
        upload_id: int,
        prior: Mapping[str, tuple[int, int]],
        stored_lines: Collection[int],
    ) -> str | None:
        """The patches to write as one JSON object by person id: every first record of a
        number with profile cells, unless its own template variables refused it, a line of
        this upload had the number first, or a previous run stored it already."""
        docs = [
            f'"{phone[1:]}":{patch}'
            for phone, patch in self.patches.items()
            if self.codes[self.firsts[phone]] != MISSING_VARIABLE
            and prior.get(phone, (0, None))[1] != upload_id
            and self.lines[self.firsts[phone]] not in stored_lines
        ]
        return "{" + ",".join(docs) + "}" if docs else None

    def copy_text(self) -> str:
        return "".join(map(add, self.heads, self.tails))


_NOBODY = Standing()


def stage_chunk(batch: RecordBatch, spec: ChunkSpec) -> StagedChunk:
    """Validates a chunk into COPY rows (runs in a parse process; pure CPU)."""
    prefix = f"{spec.campaign_id}\t{spec.upload_id}\t"
    region = spec.region
    names = spec.variable_names
    required = [(name, names.index(name)) for name in spec.required]
    opt_in_at = spec.opt_in_index
    profile = spec.profile if spec.profile is not None and spec.profile.active else None
    encode = _variables_encoder(names, profile.hidden if profile is not None else frozenset())
    stage = ProfileStager(profile) if profile is not None else None
    lines = batch.lines
    chunk = StagedChunk(lines, [], [], [])
    heads, tails, codes, firsts = chunk.heads, chunk.tails, chunk.codes, chunk.firsts
    rows = zip(*batch.values, strict=True) if batch.values else repeat((), len(lines))
    for index, (line, raw, values) in enumerate(zip(lines, batch.phones, rows, strict=True)):
        joined = "".join(values)
        variables = encode(values, joined)
        result = normalize_phone(raw, region)
        if _special(raw):
            raw = _escape(raw)
        refusal = _refusal(result, required, values, joined, opt_in_at)
        staged = None
        if refusal is None and stage is not None:
            staged = stage(values)
            refusal = (PROFILE_INVALID, staged[1]) if staged[1] is not None else None
        if refusal is not None:
            heads.append(f"{prefix}{line}\t{raw}\t\\N\t\\N\t{variables}\t")
            tails.append(_invalid_tail(*refusal))
            codes.append(refusal[0])
            continue
        assert isinstance(result, PhoneOk)
        e164 = result.e164
        # The person id is the number's digits (domain.registry.person_id).
        heads.append(f"{prefix}{line}\t{raw}\t{e164}\t{e164[1:]}\t{variables}\t")
        first = firsts.get(e164)
        if first is None:
            firsts[e164] = index
            tails.append(
                _VALID_TAIL if result.repaired is None else _repaired_tail(result.repaired)
            )
            codes.append(None)
            if opt_in_at is not None and (opted := opt_in_value(values[opt_in_at])) is not None:
                chunk.opt_ins[e164] = opted
            if staged is not None:
                chunk.keep_profile(e164, staged[0], staged[2])
        else:
            chunk.repeats.append((index, e164))
            tails.append(_invalid_tail(DUPLICATE, f"duplicate of line {lines[first]}"))
            codes.append(DUPLICATE)
    return chunk


def _variables_encoder(
    names: Sequence[str], hidden: frozenset[int]
) -> Callable[[tuple[str, ...], str], str]:
    """Each record's ``variables`` JSON (COPY-escaped), without the columns of private
    profile fields (``hidden``): those are kept in the profile only."""
    keep = [j not in hidden for j in range(len(names))]
    shown = list(compress(names, keep))
    # The variables JSON of a row whose values need neither JSON nor COPY escaping is the
    # template with the values put in as they are: the common case, and cheaper than encoding.
    keys = [encode_basestring(name) for name in shown]
    template = "{" + ", ".join(f'{key.replace("%", "%%")}: "%s"' for key in keys) + "}"
    plain_template = not _special(template.replace('"', ""))

    def encode(values: tuple[str, ...], joined: str) -> str:
        if hidden:
            values = tuple(compress(values, keep))
            joined = "".join(values)
        if plain_template and not _special(joined):
            return template % values
        return _escape(_json_object(keys, values))

    return encode


def _refusal(
    result: PhoneOk | PhoneBad,
    required: list[tuple[str, int]],
    values: tuple[str, ...],
    joined: str,
    opt_in_at: int | None,
) -> tuple[str, str] | None:
    """(reason code, reason) of a record refused on its own, or None."""
    if not isinstance(result, PhoneOk):
        return result.rejection.value, result.detail
    if required:
        missing = [name for name, j in required if _blank(values[j])]
        if missing:
            return MISSING_VARIABLE, missing_variables_reason(missing)
        # All values together within the limit: none of them is over it (one len).
        if len(joined) > MAX_PARAMETER_CHARS and (too_long := _too_long(required, values)):
            return PARAMETER_TOO_LONG, too_long
    if opt_in_at is not None:
        try:
            opt_in_value(values[opt_in_at])
        except ValueError:
            return INVALID_OPT_IN, f"{OPT_IN_REASON}, not {values[opt_in_at][:40]!r}"
    return None


def check_record(
    raw_phone: str, region: str, values: Mapping[str, str], required: Sequence[str]
) -> tuple[str | None, str | None, str | None]:
    """One record as :func:`stage_chunk` judges it on its own (no duplicates, no registry):
    (E.164 or None, reason code or None, reason). A valid record read as an international
    number has the code ``repaired_international``, as stored."""
    names = list(values)
    row = tuple(values.values())
    opt_in_at = next((i for i, name in enumerate(names) if is_opt_in_column(name)), None)
    wanted = [(name, names.index(name)) for name in required]
    result = normalize_phone(raw_phone, region)
    refusal = _refusal(result, wanted, row, "".join(row), opt_in_at)
    if refusal is not None:
        return None, refusal[0], refusal[1]
    assert isinstance(result, PhoneOk)
    if result.repaired is not None:
        return result.e164, REPAIRED_INTERNATIONAL, result.repaired
    return result.e164, None, None


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
