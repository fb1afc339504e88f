"""The README's main job: a demo campaign end to end on the embedded services."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from campaigns import progress, sample_data, services
from campaigns.runtime import resolve
from schemas.api import CampaignCreate


def run_demo(*, contacts: int, as_json: bool) -> int:
    started = time.monotonic()
    runtime = resolve()

    def say(message: str) -> None:
        if not as_json:
            print(message, file=sys.stderr)

    if contacts == 10_000 and sample_data.EXAMPLE_CSV.exists():
        csv_path = sample_data.EXAMPLE_CSV
    else:
        csv_path = sample_data.write_csv(
            runtime.settings.data_dir / "demo" / f"contacts-{contacts}.csv", contacts
        )
    say(f"postgres: {runtime.database_url}\nredis:    {runtime.redis_url}")
    from campaigns.cli import worker_argv

    worker = subprocess.Popen(
        worker_argv("ingest", 2, hostname="demo-ingest@%h"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        engine = runtime.engine
        campaign = services.create_campaign(
            engine,
            CampaignCreate(
                name="Black Friday demo",
                template="bf_offer",
                language="en",
                region="DE",
                body_variables=["first_name", "code"],
            ),
        )
        say(f"campaign {campaign.id} created; uploading {csv_path.name}")
        with csv_path.open("rb") as handle:
            spooled = services.spool_upload(
                iter(lambda: handle.read(1 << 20), b""),
                runtime.settings.spool_dir,
                max_bytes=runtime.settings.max_upload_bytes,
            )
        upload = services.register_upload(engine, campaign.id, spooled, filename=csv_path.name)
        from workers.ingest import ingest_upload

        ingest_upload.delay(upload.id)
        for upload in progress.follow_upload(engine, runtime.redis_url, upload.id):  # noqa: B020
            say(
                f"  upload {upload.id}: {upload.status:<10} rows {upload.rows_read:>7,}  "
                f"valid {upload.valid:>7,}  invalid {upload.invalid:>6,}"
            )
        final = services.get_campaign(engine, campaign.id)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    summary = {
        "campaign_id": final.id,
        "upload": {
            "id": upload.id,
            "status": upload.status,
            "rows": upload.rows_read,
            "valid": upload.valid,
            "invalid": upload.invalid,
            "reasons": upload.reasons,
        },
        "counts": {state: n for state, n in final.counts.items() if n},
        "seconds": round(time.monotonic() - started, 2),
    }
    if as_json:
        print(json.dumps(summary))
    else:
        print(json.dumps(summary, indent=2))
    return 0 if upload.status == "completed" else 2
