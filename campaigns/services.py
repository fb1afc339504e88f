"""Use cases. Each owns its transactions; none calls the network inside one."""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping

from campaigns.commands import CommandRefused, check_upload
from campaigns.csv_intake import (
    CsvLayout,
    RefusalCode,
    UploadRefused,
    iter_record_batches,
    sniff_layout,
)
from campaigns.ingest import ChunkSpec, StagedChunk, discard_parse_pool, parse_pool, stage_chunk
from campaigns.send_window import format_window
from campaigns.states import PENDING_CONTACT_STATES, CampaignStatus, ContactState
from campaigns.storage import repository as repo
from schemas.api import (
    CampaignCreate,
    CampaignOut,
    ContactOut,
    ContactPage,
    TokenCreated,
    UploadOut,
)

log = logging.getLogger(__name__)

HEAD_BYTES = 64 * 1024


class NotFound(LookupError):
    def __init__(self, what: str, ident: int | str) -> None:
        super().__init__(f"{what} {ident} not found")
        self.code = f"{what}_not_found"


# --------------------------------------------------------------------------- campaigns


def create_campaign(engine: Engine, body: CampaignCreate) -> CampaignOut:
    window = body.window()
    with engine.begin() as conn:
        campaign_id = repo.insert_campaign(
            conn,
            {
                "name": body.name,
                "template_name": body.template,
                "template_language": body.language,
                "default_region": body.region,
                "body_variables": body.body_variables,
                "phone_number_id": body.phone_number_id,
                "rate_per_s": body.rate_per_s,
                "max_attempts": body.max_attempts,
                "send_window_start": window.start if window else None,
                "send_window_end": window.end if window else None,
                "send_window_tz": window.fallback_tz if window else None,
            },
        )
        return _campaign_out(conn, campaign_id)


RateReader = Callable[[int], float]
"""Messages accepted per second lately for a campaign (Redis telemetry), for rate and ETA."""


def get_campaign(
    engine: Engine, campaign_id: int, *, rate_now: RateReader | None = None
) -> CampaignOut:
    with engine.connect() as conn:
        return _campaign_out(conn, campaign_id, rate_now=rate_now)


def list_campaigns(engine: Engine, *, rate_now: RateReader | None = None) -> list[CampaignOut]:
    with engine.connect() as conn:
        return [
            _campaign_out(conn, int(row["id"]), row, rate_now=rate_now)
            for row in repo.list_campaigns(conn)
        ]


def eta_seconds(
    status: CampaignStatus, pending: int, rate_now: float, configured_rate: float
) -> float | None:
    """Time left for the contacts still to send, at the measured rate (or the configured one
    before any was measured); None when the campaign is not sending."""
    if status is not CampaignStatus.RUNNING or pending == 0:
        return None
    rate = rate_now if rate_now > 0 else configured_rate
    return round(pending / rate, 1)


def _campaign_out(
    conn: Connection,
    campaign_id: int,
    row: RowMapping | None = None,
    *,
    rate_now: RateReader | None = None,
) -> CampaignOut:
    row = row or repo.get_campaign(conn, campaign_id)
    if row is None:
        raise NotFound("campaign", campaign_id)
    counts = repo.counts_by_state(conn, campaign_id)
    status = CampaignStatus(row["status"])
    rate = rate_now(campaign_id) if rate_now is not None else 0.0
    pending = sum(counts[s.value] for s in PENDING_CONTACT_STATES)
    return CampaignOut(
        id=row["id"],
        name=row["name"],
        status=status,
        status_reason=row["status_reason"],
        template=row["template_name"],
        language=row["template_language"],
        region=row["default_region"],
        body_variables=list(row["body_variables"]),
        phone_number_id=row["phone_number_id"],
        rate_per_s=float(row["rate_per_s"]),
        max_attempts=row["max_attempts"],
        send_window=(
            format_window(row["send_window_start"], row["send_window_end"])
            if row["send_window_start"] is not None
            else None
        ),
        send_window_tz=row["send_window_tz"],
        scheduled_at=row["scheduled_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        counts=counts,
        total=sum(counts.values()),
        rate_now_per_s=round(rate, 1),
        eta_seconds=eta_seconds(status, pending, rate, float(row["rate_per_s"])),
    )


# --------------------------------------------------------------------------- uploads


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int


class SpoolWriter:
    """Writes an upload to the spool directory as it streams in; past ``max_bytes`` it refuses
    the file and keeps nothing. Used by the CLI (sync) and the HTTP API (async body)."""

    def __init__(self, spool_dir: Path, *, max_bytes: int) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.path = spool_dir / f"{secrets.token_hex(16)}.csv"
        self._max_bytes = max_bytes
        self._size = 0
        self._out = self.path.open("wb")

    def write(self, block: bytes) -> None:
        self._size += len(block)
        if self._size > self._max_bytes:
            raise UploadRefused(
                RefusalCode.TOO_LARGE, f"file is larger than the limit of {self._max_bytes:,} bytes"
            )
        self._out.write(block)

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._out.close()
        if exc_type is not None:
            self.path.unlink(missing_ok=True)

    def spooled(self) -> Spooled:
        return Spooled(path=self.path, size=self._size)


def spool_upload(chunks: Iterator[bytes], spool_dir: Path, *, max_bytes: int) -> Spooled:
    with SpoolWriter(spool_dir, max_bytes=max_bytes) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return writer.spooled()


def register_upload(
    engine: Engine,
    campaign_id: int,
    spooled: Spooled,
    *,
    filename: str,
    phone_column: str | None = None,
    region: str | None = None,
) -> UploadOut:
    """Checks the campaign and the file's head, then records the upload for the ingest worker.

    A file refused here (empty, binary, no phone column, ...) leaves nothing behind.
    """
    try:
        with engine.begin() as conn:
            campaign = repo.get_campaign(conn, campaign_id, for_update=True)
            if campaign is None:
                raise NotFound("campaign", campaign_id)
            check_upload(CampaignStatus(campaign["status"]))
            with spooled.path.open("rb") as handle:
                head = handle.read(HEAD_BYTES)
            layout = sniff_layout(
                head, phone_column=phone_column, required_variables=campaign["body_variables"]
            )
            upload_id = repo.insert_upload(
                conn,
                {
                    "campaign_id": campaign_id,
                    "filename": filename,
                    "spool_path": str(spooled.path),
                    "size_bytes": spooled.size,
                    "phone_column": layout.columns[layout.phone_index],
                    "region": region.upper() if region else None,
                    "encoding": layout.encoding,
                    "delimiter": layout.delimiter,
                    "columns": list(layout.columns),
                },
            )
            row = repo.get_upload(conn, upload_id)
            assert row is not None
            return _upload_out(row)
    except BaseException:
        spooled.path.unlink(missing_ok=True)
        raise


def get_upload(engine: Engine, upload_id: int) -> UploadOut:
    with engine.connect() as conn:
        row = repo.get_upload(conn, upload_id)
    if row is None:
        raise NotFound("upload", upload_id)
    return _upload_out(row)


def list_uploads(engine: Engine, campaign_id: int) -> list[UploadOut]:
    with engine.connect() as conn:
        return [_upload_out(row) for row in repo.list_uploads(conn, campaign_id)]


def _upload_out(row: RowMapping) -> UploadOut:
    return UploadOut(
        id=row["id"],
        campaign_id=row["campaign_id"],
        filename=row["filename"],
        status=row["status"],
        size_bytes=row["size_bytes"],
        encoding=row["encoding"],
        delimiter=row["delimiter"],
        phone_column=row["phone_column"],
        columns=row["columns"],
        rows_read=row["rows_read"],
        valid=row["valid_rows"],
        invalid=row["invalid_rows"],
        reasons=dict(row["reasons"]),
        error=row["error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


ProgressCallback = Callable[[UploadOut], None]
FINISHED_UPLOAD = frozenset({"completed", "refused"})


def run_ingest(
    engine: Engine,
    upload_id: int,
    *,
    max_rows: int,
    chunk_rows: int,
    parse_workers: int = 1,
    on_progress: ProgressCallback | None = None,
) -> UploadOut:
    """Validates and stores every row of a spooled upload, a chunk per transaction.

    Safe to run twice for one upload (a redelivered task): the second run either finds it
    finished or waits its turn on the upload's advisory lock and resumes after ``last_line``.
    """
    with engine.connect() as lock_conn:
        if not repo.try_lock_upload(lock_conn, upload_id):
            log.info("upload %s is being ingested by another worker", upload_id)
            return get_upload(engine, upload_id)
        lock_conn.commit()
        try:
            return _ingest_locked(
                engine, upload_id, max_rows, chunk_rows, parse_workers, on_progress
            )
        finally:
            repo.unlock_upload(lock_conn, upload_id)
            lock_conn.commit()


def _ingest_locked(
    engine: Engine,
    upload_id: int,
    max_rows: int,
    chunk_rows: int,
    parse_workers: int,
    on_progress: ProgressCallback | None,
) -> UploadOut:
    with engine.begin() as conn:
        upload = repo.get_upload(conn, upload_id)
        if upload is None:
            raise NotFound("upload", upload_id)
        if upload["status"] in FINISHED_UPLOAD:
            return _upload_out(upload)
        campaign = repo.get_campaign(conn, upload["campaign_id"])
        assert campaign is not None
        repo.update_upload(
            conn, upload_id, status="processing", error=None, started_at=repo.now(conn)
        )
    region = upload["region"] or campaign["default_region"]
    required: list[str] = list(campaign["body_variables"])
    spool_path = Path(upload["spool_path"])
    try:
        with spool_path.open("rb") as stream:
            layout = sniff_layout(
                stream.read(HEAD_BYTES),
                phone_column=upload["phone_column"],
                required_variables=required,
            )
            stream.seek(0)
            spec = ChunkSpec(
                campaign_id=int(upload["campaign_id"]),
                upload_id=upload_id,
                region=region,
                variable_names=layout.variable_columns,
                required=tuple(required),
            )
            for chunk in _stage_chunks(
                stream,
                layout,
                spec,
                max_rows,
                chunk_rows,
                int(upload["last_line"]),
                parse_workers,
            ):
                with engine.begin() as conn:
                    rows_read, last_line = len(chunk.lines), chunk.last_line
                    result = repo.ingest_chunk(
                        conn, campaign_id=spec.campaign_id, upload_id=upload_id, chunk=chunk
                    )
                    repo.add_upload_progress(
                        conn, upload_id, rows_read=rows_read, last_line=last_line, chunk=result
                    )
                if on_progress is not None:
                    on_progress(get_upload(engine, upload_id))
    except UploadRefused as refused:
        # Refused whole: nothing of it stays, even the chunks stored before the refusal.
        with engine.begin() as conn:
            repo.delete_upload_contacts(conn, upload_id)
            repo.update_upload(
                conn,
                upload_id,
                status="refused",
                error=refused.message,
                rows_read=0,
                valid_rows=0,
                invalid_rows=0,
                last_line=0,
                reasons={},
                finished_at=repo.now(conn),
            )
        spool_path.unlink(missing_ok=True)
        return _finish(engine, upload_id, on_progress)
    except Exception as exc:
        with engine.begin() as conn:
            repo.update_upload(
                conn, upload_id, status="failed", error=f"{type(exc).__name__}: {exc}"
            )
        raise
    with engine.begin() as conn:
        repo.update_upload(conn, upload_id, status="completed", finished_at=repo.now(conn))
    spool_path.unlink(missing_ok=True)
    return _finish(engine, upload_id, on_progress)


def _finish(engine: Engine, upload_id: int, on_progress: ProgressCallback | None) -> UploadOut:
    final = get_upload(engine, upload_id)
    if on_progress is not None:
        on_progress(final)
    return final


def _stage_chunks(
    stream: Any,
    layout: CsvLayout,
    spec: ChunkSpec,
    max_rows: int,
    chunk_rows: int,
    start_after_line: int,
    parse_workers: int,
) -> Iterator[StagedChunk]:
    """Validated chunks of ``chunk_rows`` records, in file order.

    Reading the CSV stays in this process; validation (phone parsing dominates) runs in
    ``parse_workers`` warm processes with at most two chunks per process in flight (bounded
    memory), while this process stores the chunks that are ready.
    """
    batches = iter_record_batches(
        stream,
        layout,
        max_rows=max_rows,
        batch_rows=chunk_rows,
        start_after_line=start_after_line,
    )
    if parse_workers <= 1 or multiprocessing.current_process().daemon:
        # A Celery prefork child is daemonic and may not start processes; parse here instead.
        for batch in batches:
            yield stage_chunk(batch, spec)
        return
    pool = parse_pool(parse_workers)
    in_flight: deque[Future[StagedChunk]] = deque()
    try:
        for batch in batches:
            in_flight.append(pool.submit(stage_chunk, batch, spec))
            if len(in_flight) >= 2 * parse_workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    except BrokenProcessPool:
        discard_parse_pool(parse_workers)
        raise
    finally:
        for future in in_flight:  # refused or failed: the pool stays warm for the next upload
            future.cancel()


def mark_upload_for_retry(engine: Engine, upload_id: int) -> UploadOut:
    """A failed upload (crash, database outage) is queued again; it resumes after last_line."""
    with engine.begin() as conn:
        upload = repo.get_upload(conn, upload_id)
        if upload is None:
            raise NotFound("upload", upload_id)
        if upload["status"] in FINISHED_UPLOAD:
            raise CommandRefused(
                "upload_finished", f"upload {upload_id} is {upload['status']}; nothing to retry"
            )
        if not Path(upload["spool_path"]).exists():
            raise CommandRefused(
                "upload_file_gone", f"the spooled file of upload {upload_id} is gone; upload again"
            )
        repo.update_upload(conn, upload_id, status="received", error=None)
        row = repo.get_upload(conn, upload_id)
        assert row is not None
        return _upload_out(row)


# --------------------------------------------------------------------------- contacts


def page_contacts(
    engine: Engine,
    campaign_id: int,
    *,
    states: Sequence[ContactState] = (),
    after_id: int = 0,
    limit: int = 100,
) -> ContactPage:
    with engine.connect() as conn:
        if repo.get_campaign(conn, campaign_id) is None:
            raise NotFound("campaign", campaign_id)
        rows = repo.page_contacts(conn, campaign_id, states=states, after_id=after_id, limit=limit)
    items = [_contact_out(r) for r in rows]
    return ContactPage(items=items, next_after_id=items[-1].id if len(items) == limit else None)


def _contact_out(row: RowMapping) -> ContactOut:
    return ContactOut(
        id=row["id"],
        line=row["line_no"],
        phone_raw=row["phone_raw"],
        phone_e164=row["phone_e164"],
        state=ContactState(row["state"]),
        reason=row["reason"],
        wamid=row["wamid"],
        attempts=row["attempts"],
        error_code=row["error_code"],
        error_detail=row["error_detail"],
        sent_at=row["sent_at"],
        delivered_at=row["delivered_at"],
        read_at=row["read_at"],
        variables=dict(row["variables"]),
    )


CSV_EXPORT_HEADER = (
    "line",
    "phone_raw",
    "phone_e164",
    "state",
    "reason",
    "wamid",
    "attempts",
    "error_code",
    "error_detail",
    "sent_at",
    "delivered_at",
    "read_at",
)
_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d .]*")


def neutralise_cell(value: str) -> str:
    """Defuses spreadsheet formulas (=, +, -, @, tab, CR first) with a leading apostrophe.

    Plain numbers such as an E.164 phone ("+4915...") are left alone: a spreadsheet reads them
    as numbers, never as formulas, and operators need them intact.
    """
    if value and value[0] in "=+-@\t\r" and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def export_contacts_csv(
    engine: Engine, campaign_id: int, *, states: Sequence[ContactState] = ()
) -> Iterator[str]:
    """CSV text of the campaign's contacts, streamed a page at a time."""
    with engine.connect() as conn:
        if repo.get_campaign(conn, campaign_id) is None:
            raise NotFound("campaign", campaign_id)
    return _export_rows(engine, campaign_id, states)


def _export_rows(engine: Engine, campaign_id: int, states: Sequence[ContactState]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_EXPORT_HEADER)
    with engine.connect() as conn:
        for n, row in enumerate(repo.iter_contacts(conn, campaign_id, states=states), start=1):
            cells = [
                row["line_no"],
                row["phone_raw"],
                row["phone_e164"],
                row["state"],
                row["reason"],
                row["wamid"],
                row["attempts"],
                row["error_code"],
                row["error_detail"],
                row["sent_at"],
                row["delivered_at"],
                row["read_at"],
            ]
            writer.writerow(["" if c is None else neutralise_cell(str(c)) for c in cells])
            if n % 1000 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


# --------------------------------------------------------------------------- API tokens


def create_api_token(engine: Engine, name: str) -> TokenCreated:
    token = "wac_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        token_id = repo.insert_api_token(conn, name, token)
    return TokenCreated(id=token_id, name=name, token=token)


def token_is_valid(engine: Engine, configured: set[str], presented: str) -> bool:
    if any(secrets.compare_digest(presented, t) for t in configured):
        return True
    with engine.connect() as conn:
        return repo.api_token_exists(conn, presented)
