"""Upload benchmark: a full upload into Postgres vs the bare phonenumbers loop on the same rows.

    python bench/ingest.py [--rows 1000000] [--profile-fields N]

Prints one JSON line: rows, upload_rows_per_s, bare_parse_rows_per_s, ratio, peak_rss_mb,
profile_fields. ``--profile-fields N`` creates a profile schema of N fields (INTEGER, ENUM,
STRING, BOOLEAN, FLOAT, DATETIME in turn) and gives every row N more columns named like them,
so the upload checks and writes N profile values per row (removed again afterwards).
The upload runs in a child process; the peak RSS figure is that of the largest process of the
upload (the ingest process or one of its parse processes). Postgres and Redis are the embedded
ones unless DATABASE_URL / REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import phonenumbers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from campaigns.dev import sample_data  # noqa: E402

REGION = "DE"


def bare_parse_rate(path: Path) -> tuple[int, float]:
    """parse + is_valid + format(E164) on every phone value, in batches; times only the loop."""
    parse, is_valid, fmt = (
        phonenumbers.parse,
        phonenumbers.is_valid_number,
        phonenumbers.format_number,
    )
    e164 = phonenumbers.PhoneNumberFormat.E164
    total, elapsed = 0, 0.0
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        while True:
            batch = [row[0] for _, row in zip(range(100_000), reader, strict=False)]
            if not batch:
                break
            start = time.perf_counter()
            for raw in batch:
                try:
                    number = parse(raw, REGION)
                except phonenumbers.NumberParseException:
                    continue
                if is_valid(number):
                    fmt(number, e164)
            elapsed += time.perf_counter() - start
            total += len(batch)
    return total, total / elapsed


# Profile fields of the benchmark: (type, extra schema keys, the value of row n).
PROFILE_KINDS: list[tuple[str, dict[str, object], Callable[[int], str]]] = [
    ("INTEGER", {"default": 0}, lambda n: str(n % 97)),
    (
        "ENUM",
        {"default": "A", "enum": [{"value": v, "display": v} for v in ("A", "B", "C")]},
        lambda n: "abc"[n % 3],
    ),
    ("STRING", {"default": None, "null": True}, lambda n: f"text {n}"),
    ("BOOLEAN", {"default": False}, lambda n: "yes" if n % 2 else "no"),
    ("FLOAT", {"default": 0.0}, lambda n: f"{n % 1000 / 7:.3f}"),
    ("DATETIME", {"default": None, "null": True}, lambda n: f"19{n % 90 + 10}-05-0{n % 9 + 1}"),
]


def profile_schema(fields: int) -> dict[str, object]:
    kinds = [PROFILE_KINDS[i % len(PROFILE_KINDS)] for i in range(fields)]
    return {
        "version": f"bench-{fields}",
        "fields": [
            {"name": f"p{i}", "display": f"P{i}", "type": kind, "is_private": False, **extra}
            for i, (kind, extra, _) in enumerate(kinds)
        ],
    }


def add_profile_columns(path: Path, fields: int) -> None:
    """Rewrites the CSV with ``fields`` more columns p0..pN-1, a value of its type each."""
    makers = [PROFILE_KINDS[i % len(PROFILE_KINDS)][2] for i in range(fields)]
    out = path.with_suffix(".tmp")
    with path.open(newline="", encoding="utf-8") as src, out.open("w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow([*next(reader), *(f"p{i}" for i in range(fields))])
        for n, row in enumerate(reader):
            writer.writerow([*row, *(make(n) for make in makers)])
    out.replace(path)


def child_upload(path: Path, profile_fields: int) -> None:
    """Runs in its own process: register + ingest exactly as the worker does."""

    from campaigns.runtime.stores import resolve
    from campaigns.services import campaigns as campaign_service
    from campaigns.services import profiles, uploads
    from schemas.api import CampaignCreate

    runtime = resolve()
    engine = runtime.engine
    schema_uuid = None
    if profile_fields:
        schema_uuid = profiles.create_schema(engine, profile_schema(profile_fields)).uuid
    campaign = campaign_service.create_campaign(
        engine, CampaignCreate(name="bench", template="bf_offer", region=REGION)
    )
    start = time.perf_counter()
    with path.open("rb") as handle:
        spooled = uploads.spool_upload(
            iter(lambda: handle.read(1 << 20), b""), runtime.settings.spool_dir, max_bytes=1 << 34
        )
    upload = uploads.register_upload(engine, campaign.id, spooled, filename=path.name)
    final = uploads.run_ingest(
        engine,
        upload.id,
        max_rows=runtime.settings.max_upload_rows,
        chunk_rows=runtime.settings.ingest_chunk_rows,
        parse_workers=runtime.settings.ingest_parse_workers,
    )
    elapsed = time.perf_counter() - start
    assert final.status == "completed", final.error
    print(
        json.dumps(
            {
                "rows": final.rows_read,
                "valid": final.valid,
                "invalid": final.invalid,
                "seconds": elapsed,
                "campaign_id": campaign.id,
                "descendants_peak_rss_kb": descendants_peak_rss_kb(),
            }
        ),
        flush=True,
    )
    clean_up(engine, campaign.id, schema_uuid)


def clean_up(engine: Any, campaign_id: int, schema_uuid: str | None) -> None:
    """Untimed: leave the database as it was (runs add a million rows each otherwise), the
    registry's people and the profiles this upload made included, so the next run makes
    them again."""
    from sqlalchemy import text

    with engine.begin() as conn:
        if schema_uuid is not None:
            for table, column in (("profiles", "schema_uuid"), ("profile_schemas", "uuid")):
                conn.execute(
                    text(f"DELETE FROM {table} WHERE {column} = CAST(:u AS uuid)"),
                    {"u": schema_uuid},
                )
        conn.execute(
            text(
                """
                DELETE FROM people p USING (
                    SELECT DISTINCT person_id FROM contacts WHERE campaign_id = :id
                ) mine
                WHERE p.id = mine.person_id AND p.status IS NULL AND NOT p.opted_out
                  AND NOT p.opted_in AND NOT EXISTS (
                      SELECT 1 FROM contacts o WHERE o.person_id = p.id AND o.campaign_id <> :id
                  )
                """
            ),
            {"id": campaign_id},
        )
        conn.execute(text("DELETE FROM campaigns WHERE id = :id"), {"id": campaign_id})
    # The next run inserts the same people again: not into a table of dead rows.
    with engine.connect() as conn:
        autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
        autocommit.execute(text("VACUUM people"))
        if schema_uuid is not None:
            autocommit.execute(text("VACUUM profiles"))


def descendants_peak_rss_kb() -> int:
    """Peak RSS of this process's living descendants (the forkserver and its parse processes).

    They are not children of this process, so RUSAGE_CHILDREN in the parent never sees them;
    each one's high-water mark is read from /proc while they are still alive.
    """
    import psutil

    peak = 0
    for process in psutil.Process().children(recursive=True):
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--profile-fields", type=int, default=0, help="N profile fields filled by every row"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_upload(args.child, args.profile_fields)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = sample_data.write_csv(Path(tmp) / "contacts.csv", args.rows, seed=11)
        if args.profile_fields:
            add_profile_columns(path, args.profile_fields)
        rows, bare_rate = bare_parse_rate(path)
        child = [sys.executable, __file__, "--child", str(path)]
        done = subprocess.run(
            [*child, "--profile-fields", str(args.profile_fields)],
            check=True,
            capture_output=True,
            text=True,
        )
        upload = json.loads(done.stdout.strip().splitlines()[-1])
    # The largest process of the upload: the ingest process or one of its parse processes.
    peak_kb = max(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, upload["descendants_peak_rss_kb"]
    )
    upload_rate = upload["rows"] / upload["seconds"]
    print(
        json.dumps(
            {
                "rows": rows,
                "upload_rows_per_s": round(upload_rate),
                "bare_parse_rows_per_s": round(bare_rate),
                "ratio": round(upload_rate / bare_rate, 3),
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "valid": upload["valid"],
                "invalid": upload["invalid"],
                "profile_fields": args.profile_fields,
            }
        )
    )


if __name__ == "__main__":
    main()
