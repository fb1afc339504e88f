"""Ingest tasks: thin adapters around campaigns.services.uploads.run_ingest."""

from __future__ import annotations

import logging

import redis
from celery import shared_task

from campaigns.clients import upload_progress as progress
from campaigns.clients.telemetry import SyncTelemetry
from campaigns.domain.registry import Suppression
from campaigns.runtime.stores import resolve
from campaigns.services import uploads
from schemas.api import UploadOut

log = logging.getLogger(__name__)

SUPPRESSION_CODES = tuple(s.value for s in Suppression)


class _RowCounter:
    """Adds each chunk's newly validated rows to the shared upload-row counters (/metrics).

    Starts from the upload's stored counts, so a task resumed after a crash counts only the
    chunks it stores itself.
    """

    def __init__(self, telemetry: SyncTelemetry, start: UploadOut) -> None:
        self._telemetry = telemetry
        self._valid = start.valid
        self._invalid = start.invalid
        self._reasons = dict(start.reasons)

    def __call__(self, upload: UploadOut) -> None:
        valid, invalid = upload.valid - self._valid, upload.invalid - self._invalid
        if valid <= 0 and invalid <= 0:
            return
        suppressed = {
            reason: upload.reasons.get(reason, 0) - self._reasons.get(reason, 0)
            for reason in SUPPRESSION_CODES
        }
        self._valid, self._invalid = upload.valid, upload.invalid
        self._reasons = dict(upload.reasons)
        try:
            self._telemetry.record_upload_rows(
                valid=max(valid, 0),
                invalid=max(invalid, 0),
                suppressed={r: n for r, n in suppressed.items() if n > 0},
            )
        except redis.RedisError:  # metrics never fail an upload
            log.warning("could not record upload row metrics", exc_info=True)


@shared_task(name="workers.ingest.ingest_upload", acks_late=True)
def ingest_upload(upload_id: int) -> None:
    runtime = resolve()
    settings = runtime.settings
    publisher = progress.UploadProgressPublisher(runtime.redis_url)
    counter = _RowCounter(
        SyncTelemetry(redis.Redis.from_url(runtime.redis_url)),
        uploads.get_upload(runtime.engine, upload_id),
    )

    def on_progress(upload: UploadOut) -> None:
        counter(upload)
        publisher.publish(upload)

    uploads.run_ingest(
        runtime.engine,
        upload_id,
        max_rows=settings.max_upload_rows,
        chunk_rows=settings.ingest_chunk_rows,
        parse_workers=settings.ingest_parse_workers,
        on_progress=on_progress,
        max_columns=settings.max_csv_columns,
    )
