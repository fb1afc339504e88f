"""Uploads: spool the file, check its head, record it, then validate and store every row
(run by the ingest worker), a chunk per transaction."""

from __future__ import annotations

import logging
import multiprocessing
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, RowMapping

from campaigns.clients.upload_progress import UploadProgressSubscription
from campaigns.domain.admin import CommandRefused, check_upload
from campaigns.domain.csv_intake import (
    CsvLayout,
    RefusalCode,
    UploadRefused,
    iter_record_batches,
    sniff_layout,
)
from campaigns.domain.csv_limits import DEFAULT_MAX_FIELDS
from campaigns.domain.profile_docs import ProfileColumns, profile_columns, template_columns
from campaigns.domain.profiles import NO_SCHEMA, ProfileSchema
from campaigns.domain.refusals import NotFound
from campaigns.domain.registry import is_opt_in_column
from campaigns.domain.states import CampaignStatus
from campaigns.domain.upload_preview import PREVIEW_ROWS, preview_head
from campaigns.domain.uploads import (
    ChunkSpec,
    StagedChunk,
    stage_chunk,
)
from campaigns.storage import campaigns as campaigns_db
from campaigns.storage import profiles as profiles_db
from campaigns.storage import sql
from campaigns.storage import uploads as uploads_db
from schemas.api import (
    PreviewProblemOut,
    PreviewRowOut,
    UploadOut,
    UploadPreview,
)

log = logging.getLogger(__name__)

HEAD_BYTES = 64 * 1024


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
    max_columns: int = DEFAULT_MAX_FIELDS,
) -> UploadOut:
    """Checks the campaign and the file's head, then records the upload for the ingest worker.

    A file refused here (empty, binary, no phone column, ...) leaves nothing behind.
    """
    try:
        with engine.begin() as conn:
            campaign = campaigns_db.get_campaign(conn, campaign_id, for_update=True)
            if campaign is None:
                raise NotFound("campaign", campaign_id)
            check_upload(CampaignStatus(campaign["status"]))
            with spooled.path.open("rb") as handle:
                head = handle.read(HEAD_BYTES)
            # A template variable that is a profile field needs no column: the profile has it.
            schema = profiles_db.newest_schema(conn)
            layout = sniff_layout(
                head,
                phone_column=phone_column,
                required_variables=template_columns(schema, campaign["body_variables"]),
                max_columns=max_columns,
            )
            upload_id = uploads_db.insert_upload(
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
            row = uploads_db.get_upload(conn, upload_id)
            assert row is not None
            return _upload_out(row)
    except BaseException:
        spooled.path.unlink(missing_ok=True)
        raise


def preview_upload(
    engine: Engine,
    campaign_id: int,
    head: bytes,
    *,
    complete: bool,
    phone_column: str | None = None,
    region: str | None = None,
    rows: int = PREVIEW_ROWS,
    max_columns: int = DEFAULT_MAX_FIELDS,
) -> UploadPreview:
    """The first records of a file as an upload to the campaign would read them, from the
    file's head (``complete``: the head is the whole file). Reads the campaign; stores
    nothing. A campaign that takes no upload now is one more problem, not a refusal."""
    with engine.connect() as conn:
        campaign = campaigns_db.get_campaign(conn, campaign_id)
    if campaign is None:
        raise NotFound("campaign", campaign_id)
    preview = preview_head(
        head,
        complete=complete,
        region=(region or campaign["default_region"]).upper(),
        phone_column=phone_column,
        required_variables=campaign["body_variables"],
        rows=rows,
        max_columns=max_columns,
    )
    problems = [PreviewProblemOut(code=p.code, message=p.message) for p in preview.problems]
    try:
        check_upload(CampaignStatus(campaign["status"]))
    except CommandRefused as refused:
        problems.append(PreviewProblemOut(code=refused.code, message=refused.message))
    return UploadPreview(
        encoding=preview.encoding,
        delimiter=preview.delimiter,
        columns=list(preview.columns),
        phone_column=preview.phone_column,
        variables=preview.variables,
        rows=[
            PreviewRowOut(
                line=r.line,
                cells=list(r.cells),
                phone_e164=r.phone_e164,
                valid=r.valid,
                reason_code=r.reason_code,
                reason=r.reason,
            )
            for r in preview.rows
        ],
        problems=problems,
        bytes_read=len(head),
    )


def get_upload(engine: Engine, upload_id: int) -> UploadOut:
    with engine.connect() as conn:
        row = uploads_db.get_upload(conn, upload_id)
    if row is None:
        raise NotFound("upload", upload_id)
    return _upload_out(row)


def list_uploads(engine: Engine, campaign_id: int) -> list[UploadOut]:
    with engine.connect() as conn:
        return [_upload_out(row) for row in uploads_db.list_uploads(conn, campaign_id)]


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
    max_columns: int = DEFAULT_MAX_FIELDS,
) -> UploadOut:
    """Validates and stores every row of a spooled upload, a chunk per transaction.

    Safe to run twice for one upload (a redelivered task): the second run either finds it
    finished or waits its turn on the upload's advisory lock and resumes after ``last_line``.
    """
    with engine.connect() as lock_conn:
        if not uploads_db.try_lock_upload(lock_conn, upload_id):
            log.info("upload %s is being ingested by another worker", upload_id)
            return get_upload(engine, upload_id)
        lock_conn.commit()
        try:
            limits = _Limits(max_rows, chunk_rows, parse_workers, max_columns)
            return _ingest_locked(engine, upload_id, limits, on_progress)
        finally:
            uploads_db.unlock_upload(lock_conn, upload_id)
            lock_conn.commit()


@dataclass(frozen=True)
class _Limits:
    max_rows: int
    chunk_rows: int
    parse_workers: int
    max_columns: int


@dataclass(frozen=True)
class _Run:
    """What one ingest run of an upload needs, read when it starts."""

    upload_id: int
    campaign_id: int
    spool_path: Path
    phone_column: str | None
    region: str
    template: tuple[str, ...]  # the campaign's template variables
    last_line: int  # resume after this line (a previous run committed up to it)
    require_opt_in: bool = False  # the registry refuses people without an opt-in
    schema: ProfileSchema = NO_SCHEMA  # the newest profile schema when the run started

    @property
    def required(self) -> tuple[str, ...]:
        """Template variables every row must fill from its own columns (the others are
        profile fields: a blank or missing cell is filled from the profile)."""
        return tuple(template_columns(self.schema, self.template))


def _ingest_locked(
    engine: Engine, upload_id: int, limits: _Limits, on_progress: ProgressCallback | None
) -> UploadOut:
    run = _start_run(engine, upload_id)
    if isinstance(run, UploadOut):  # finished by an earlier run
        return run
    try:
        _store_chunks(engine, run, limits, on_progress)
    except UploadRefused as refused:
        _mark_refused(engine, upload_id, refused)
        run.spool_path.unlink(missing_ok=True)
        return _finish(engine, upload_id, on_progress)
    except Exception as exc:
        with engine.begin() as conn:
            uploads_db.update_upload(
                conn, upload_id, status="failed", error=f"{type(exc).__name__}: {exc}"
            )
        raise
    with engine.begin() as conn:
        uploads_db.update_upload(conn, upload_id, status="completed", finished_at=sql.now(conn))
    run.spool_path.unlink(missing_ok=True)
    return _finish(engine, upload_id, on_progress)


def _start_run(engine: Engine, upload_id: int) -> _Run | UploadOut:
    """Marks the upload processing and reads what the run needs; a finished upload as is."""
    with engine.begin() as conn:
        upload = uploads_db.get_upload(conn, upload_id)
        if upload is None:
            raise NotFound("upload", upload_id)
        if upload["status"] in FINISHED_UPLOAD:
            return _upload_out(upload)
        campaign = campaigns_db.get_campaign(conn, upload["campaign_id"])
        assert campaign is not None
        uploads_db.update_upload(
            conn, upload_id, status="processing", error=None, started_at=sql.now(conn)
        )
        schema = profiles_db.newest_schema(conn)
    return _Run(
        upload_id=upload_id,
        campaign_id=int(upload["campaign_id"]),
        spool_path=Path(upload["spool_path"]),
        phone_column=upload["phone_column"],
        region=upload["region"] or campaign["default_region"],
        template=tuple(campaign["body_variables"]),
        last_line=int(upload["last_line"]),
        require_opt_in=bool(campaign["require_opt_in"]),
        schema=schema,
    )


def _store_chunks(
    engine: Engine, run: _Run, limits: _Limits, on_progress: ProgressCallback | None
) -> None:
    """Reads the spooled file and stores it a validated chunk per transaction."""
    with run.spool_path.open("rb") as stream:
        layout = sniff_layout(
            stream.read(HEAD_BYTES),
            phone_column=run.phone_column,
            required_variables=run.required,
            max_columns=limits.max_columns,
        )
        stream.seek(0)
        spec = ChunkSpec(
            campaign_id=run.campaign_id,
            upload_id=run.upload_id,
            region=run.region,
            variable_names=layout.variable_columns,
            required=run.required,
            opt_in_index=_opt_in_index(layout.variable_columns),
            profile=profile_columns(run.schema, layout.variable_columns, run.template),
        )
        chunks = _stage_chunks(stream, layout, spec, limits, run.last_line)
        for chunk in chunks:
            try:
                _store_chunk(engine, run, chunk, spec.profile, racing=False)
            except uploads_db.PeopleRaced:  # nothing stored: again, sharing its people
                _store_chunk(engine, run, chunk, spec.profile, racing=True)
            if on_progress is not None:
                on_progress(get_upload(engine, run.upload_id))


def _store_chunk(
    engine: Engine,
    run: _Run,
    chunk: StagedChunk,
    profile: ProfileColumns | None,
    *,
    racing: bool,
) -> None:
    """One chunk and the upload's counters and resume point, in one transaction."""
    with engine.begin() as conn:
        result = uploads_db.ingest_chunk(
            conn,
            campaign_id=run.campaign_id,
            upload_id=run.upload_id,
            chunk=chunk,
            require_opt_in=run.require_opt_in,
            racing=racing,
            profile=profile,
        )
        uploads_db.add_upload_progress(
            conn,
            run.upload_id,
            rows_read=len(chunk.lines),
            last_line=chunk.last_line,
            chunk=result,
        )


def _opt_in_index(columns: tuple[str, ...]) -> int | None:
    """The column that records opt-ins (``opted_in``), if the file has one."""
    return next((i for i, name in enumerate(columns) if is_opt_in_column(name)), None)


def _mark_refused(engine: Engine, upload_id: int, refused: UploadRefused) -> None:
    """Refused whole: nothing of it stays, even the chunks stored before the refusal."""
    with engine.begin() as conn:
        uploads_db.delete_upload_contacts(conn, upload_id)
        uploads_db.update_upload(
            conn,
            upload_id,
            status="refused",
            error=refused.message,
            rows_read=0,
            valid_rows=0,
            invalid_rows=0,
            last_line=0,
            reasons={},
            finished_at=sql.now(conn),
        )


def _finish(engine: Engine, upload_id: int, on_progress: ProgressCallback | None) -> UploadOut:
    final = get_upload(engine, upload_id)
    if on_progress is not None:
        on_progress(final)
    return final


def _stage_chunks(
    stream: Any, layout: CsvLayout, spec: ChunkSpec, limits: _Limits, start_after_line: int
) -> Iterator[StagedChunk]:
    """Validated chunks of ``chunk_rows`` records, in file order.

    Reading the CSV stays in this process; validation (phone parsing dominates) runs in
    ``parse_workers`` warm processes with at most two chunks per process in flight (bounded
    memory), while this process stores the chunks that are ready.
    """
    batches = iter_record_batches(
        stream,
        layout,
        max_rows=limits.max_rows,
        batch_rows=limits.chunk_rows,
        start_after_line=start_after_line,
        max_fields=limits.max_columns,
    )
    parse_workers = limits.parse_workers
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
        upload = uploads_db.get_upload(conn, upload_id)
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
        uploads_db.update_upload(conn, upload_id, status="received", error=None)
        row = uploads_db.get_upload(conn, upload_id)
        assert row is not None
        return _upload_out(row)


_POOLS: dict[int, ProcessPoolExecutor] = {}


_POOLS_LOCK = threading.Lock()


def parse_pool(workers: int) -> ProcessPoolExecutor:
    """The process's warm pool of ``workers`` parse processes (started on first use)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            context = multiprocessing.get_context("forkserver")
            # Imported once in the forkserver, so every parse process starts with phonenumbers
            # loaded instead of importing it on its first chunk.
            context.set_forkserver_preload([__name__])
            pool = ProcessPoolExecutor(workers, mp_context=context)
            _POOLS[workers] = pool
        return pool


def discard_parse_pool(workers: int) -> None:
    """Drops a pool whose process died (BrokenProcessPool); the next upload starts a new one."""
    with _POOLS_LOCK:
        pool = _POOLS.pop(workers, None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


FINAL_STATUSES = frozenset({"completed", "refused", "failed"})


def follow_upload(
    engine: Engine,
    redis_url: str,
    upload_id: int,
    *,
    recheck_s: float = 2.0,
    give_up: Callable[[], bool] = lambda: False,
) -> Iterator[UploadOut]:
    """Yields the upload as it progresses until it is completed, refused or failed.

    Subscribes first, then reads the row, so no final message can slip between the two; a
    periodic re-read covers a message lost while Redis restarted.
    """
    feed = UploadProgressSubscription(redis_url, upload_id)
    try:
        current = get_upload(engine, upload_id)
        yield current
        while current.status not in FINAL_STATUSES and not give_up():
            current = feed.next(recheck_s) or get_upload(engine, upload_id)
            yield current
    finally:
        feed.close()
