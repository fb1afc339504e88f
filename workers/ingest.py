"""Ingest tasks: thin adapters around campaigns.services.run_ingest."""

from __future__ import annotations

from celery import shared_task

from campaigns import progress, services
from campaigns.runtime import resolve


@shared_task(name="workers.ingest.ingest_upload", acks_late=True)
def ingest_upload(upload_id: int) -> None:
    runtime = resolve()
    settings = runtime.settings
    publisher = progress.UploadProgressPublisher(runtime.redis_url)
    services.run_ingest(
        runtime.engine,
        upload_id,
        max_rows=settings.max_upload_rows,
        chunk_rows=settings.ingest_chunk_rows,
        parse_workers=settings.ingest_parse_workers,
        on_progress=publisher.publish,
    )
