"""Uploads and their contacts: ``upload``, ``upload-status``, ``upload-retry``, ``contacts``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from campaigns.cli import output

if TYPE_CHECKING:
    from schemas.api import UploadOut


@click.command("upload")
@click.argument("campaign_id", type=int)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--phone-column", help="The column holding the numbers (found by name otherwise).")
@click.option("--region", help="Override the campaign's default region for this file.")
@click.option("--no-wait", is_flag=True, help="Queue the file and return at once.")
@output.json_option
def upload(
    campaign_id: int, file: Path, phone_column: str | None, region: str | None, no_wait: bool
) -> None:
    """Upload a contacts CSV and wait for its validation report.

    A progress bar shows on a terminal (never with --json). Exits 2 unless the upload
    completes.
    """
    from campaigns.domain.refusals import Refusal
    from campaigns.runtime.stores import resolve
    from campaigns.services import uploads as upload_service
    from workers.ingest import ingest_upload

    runtime = resolve()
    settings = runtime.settings
    if not file.is_file():
        raise Refusal("file_not_found", f"{file} is not a file")
    with file.open("rb") as handle:
        spooled = upload_service.spool_upload(
            iter(lambda: handle.read(1 << 20), b""),
            settings.spool_dir,
            max_bytes=settings.max_upload_bytes,
        )
    queued = upload_service.register_upload(
        runtime.engine,
        campaign_id,
        spooled,
        filename=file.name,
        phone_column=phone_column,
        region=region,
        max_columns=settings.max_csv_columns,
    )
    ingest_upload.delay(queued.id)
    if no_wait:
        output.emit(queued, f"upload {queued.id} queued")
        return
    final = queued
    with output.Progress(estimate_rows(file)) as bar:
        for final in upload_service.follow_upload(runtime.engine, runtime.redis_url, queued.id):
            bar.show(final.rows_read, _progress_text(final))
        if final.status == "completed":
            bar.done()
    output.emit(final, _report_lines(final))
    if final.status != "completed":
        raise click.exceptions.Exit(output.EXIT_REFUSED)


def estimate_rows(path: Path) -> int:
    """Data rows in a CSV, from its size and the average length of its first 64 KiB of rows."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(64 * 1024)
    lines = max(1, head.count(b"\n"))
    return max(1, int(size / max(1, len(head) / lines)) - 1)


def _progress_text(upload: UploadOut) -> str:
    return f"{upload.rows_read:,} rows  {upload.valid:,} valid  {upload.invalid:,} invalid"


def _report_lines(upload: UploadOut) -> list[str]:
    lines = [f"upload {upload.id}: {upload.status}"]
    if upload.error:
        lines.append(f"  {upload.error}")
    lines.append(f"  rows {upload.rows_read:,}  valid {upload.valid:,}  invalid {upload.invalid:,}")
    for reason, n in sorted(upload.reasons.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {reason:<24} {n:>9,}")
    return lines


@click.command("upload-status")
@click.argument("upload_id", type=int)
@output.json_option
def upload_status(upload_id: int) -> None:
    """Show an upload's report."""
    from campaigns.runtime.stores import resolve
    from campaigns.services import uploads as upload_service

    found = upload_service.get_upload(resolve().engine, upload_id)
    output.emit(found, found.model_dump_json(indent=2))


@click.command("upload-retry")
@click.argument("upload_id", type=int)
@output.json_option
def upload_retry(upload_id: int) -> None:
    """Queue a failed upload again (it resumes where it stopped)."""
    from campaigns.runtime.stores import resolve
    from campaigns.services import uploads as upload_service
    from workers.ingest import ingest_upload

    queued = upload_service.mark_upload_for_retry(resolve().engine, upload_id)
    ingest_upload.delay(queued.id)
    output.emit(queued, f"upload {queued.id} queued again")


def _complete_state(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    from campaigns.domain.states import ContactState

    return [s.value for s in ContactState if s.value.startswith(incomplete)]


@click.command("contacts")
@click.argument("campaign_id", type=int)
@click.option(
    "--state",
    "states",
    multiple=True,
    shell_complete=_complete_state,
    help="Only contacts in this state; repeat for several.",
)
@click.option("--csv", "as_csv", is_flag=True, help="Export every matching row as CSV.")
@click.option("--after-id", type=int, default=0, show_default=True, help="Page after this id.")
@click.option("--limit", type=int, default=100, show_default=True, help="Rows per page.")
@output.json_option
def contacts(
    campaign_id: int, states: tuple[str, ...], as_csv: bool, after_id: int, limit: int
) -> None:
    """List or export (--csv) a campaign's contacts.

    Without --csv, one page of --limit contacts after --after-id; with it, every matching
    contact as CSV.
    """
    from campaigns.domain.refusals import Refusal
    from campaigns.domain.states import ContactState
    from campaigns.runtime.stores import resolve
    from campaigns.services import campaign_contacts

    try:
        wanted = [ContactState(s) for s in states]
    except ValueError as exc:
        known = ", ".join(s.value for s in ContactState)
        raise Refusal("invalid_state", f"{exc}; states: {known}") from exc
    engine = resolve().engine
    if as_csv:
        output.stream(campaign_contacts.export_contacts_csv(engine, campaign_id, states=wanted))
        return
    page = campaign_contacts.page_contacts(
        engine, campaign_id, states=wanted, after_id=after_id, limit=limit
    )
    output.emit(
        page,
        [
            f"{c.id:>8} line {c.line:>7}  {c.state.value:<16} {c.phone_e164 or c.phone_raw!r}"
            f"  {c.reason or ''}"
            for c in page.items
        ],
    )


COMMANDS: tuple[click.Command, ...] = (upload, upload_status, upload_retry, contacts)
