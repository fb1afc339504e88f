"""The `wa-campaigns` command line.

Exit codes: 0 done, 1 unexpected failure, 2 refused (bad input or an illegal command: nothing
was changed). ``--json`` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

from campaigns.services import campaign_contacts, tokens, uploads

EXIT_REFUSED = 2


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _emit(args: argparse.Namespace, payload: Any, human: Callable[[], None]) -> None:
    if getattr(args, "json", False):
        if isinstance(payload, BaseModel):
            payload = payload.model_dump(mode="json")
        print(json.dumps(payload, default=str))
    else:
        human()


def _runtime() -> Any:
    from campaigns.runtime.stores import resolve

    return resolve()


# --------------------------------------------------------------------------- campaign


def cmd_campaign_create(args: argparse.Namespace) -> int:
    from campaigns.services import campaigns as campaign_service
    from schemas.api import CampaignCreate, validation_message

    try:
        body = CampaignCreate(
            name=args.name,
            template=args.template,
            language=args.language,
            region=args.region,
            body_variables=[v.strip() for v in args.variables.split(",") if v.strip()]
            if args.variables
            else [],
            phone_number_id=args.phone_number_id,
            rate_per_s=args.rate,
            max_attempts=args.max_attempts,
            send_window=args.send_window,
            send_window_tz=args.send_window_tz,
        )
    except ValidationError as exc:
        raise Refused("invalid_campaign", validation_message(exc.errors())) from exc
    campaign = campaign_service.create_campaign(_runtime().engine, body)
    _emit(args, campaign, lambda: print(f"campaign {campaign.id} created: {campaign.name}"))
    return 0


def cmd_campaign_list(args: argparse.Namespace) -> int:
    from campaigns.services import campaigns as campaign_service

    campaigns = campaign_service.list_campaigns(_runtime().engine)

    def human() -> None:
        for c in campaigns:
            print(f"{c.id:>5}  {c.status.value:<10} {c.total:>9} contacts  {c.name}")

    _emit(args, {"campaigns": [c.model_dump(mode="json") for c in campaigns]}, human)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import redis

    from campaigns.clients import telemetry
    from campaigns.services import campaigns as campaign_service

    runtime = _runtime()
    client = redis.Redis.from_url(runtime.redis_url)
    campaign = campaign_service.get_campaign(
        runtime.engine,
        args.campaign_id,
        rate_now=lambda cid: telemetry.rate_now(client, cid),
    )

    def human() -> None:
        reason = f" ({campaign.status_reason})" if campaign.status_reason else ""
        print(f"campaign {campaign.id} {campaign.name!r}: {campaign.status.value}{reason}")
        for state, n in campaign.counts.items():
            if n:
                print(f"  {state:<18} {n:>10,}")
        print(f"  {'total':<18} {campaign.total:>10,}")
        eta = f", ETA {campaign.eta_seconds:,.0f} s" if campaign.eta_seconds is not None else ""
        print(f"  rate now {campaign.rate_now_per_s:,.1f} msg/s{eta}")

    _emit(args, campaign, human)
    return 0


# --------------------------------------------------------------------------- admin


def _admin_deps() -> tuple[Any, Any]:
    import redis

    from campaigns.clients.send_gate import SyncPauseFlags

    runtime = _runtime()
    return runtime.engine, SyncPauseFlags(redis.Redis.from_url(runtime.redis_url))


def _show_campaign(args: argparse.Namespace, campaign: Any) -> None:
    reason = f" ({campaign.status_reason})" if campaign.status_reason else ""
    _emit(args, campaign, lambda: print(f"campaign {campaign.id}: {campaign.status.value}{reason}"))


def cmd_start(args: argparse.Namespace) -> int:
    from datetime import datetime

    from campaigns.services import admin

    at = None
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError as exc:
            raise Refused("bad_time", f"--at {args.at!r} is not an ISO 8601 time") from exc
    engine, flags = _admin_deps()
    campaign = admin.start_campaign(engine, flags, args.campaign_id, at=at)
    _wake_dispatch()
    _show_campaign(args, campaign)
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from campaigns.services import admin

    engine, flags = _admin_deps()
    _show_campaign(args, admin.pause_campaign(engine, flags, args.campaign_id))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from campaigns.services import admin

    engine, flags = _admin_deps()
    campaign = admin.resume_campaign(engine, flags, args.campaign_id)
    _wake_dispatch()
    _show_campaign(args, campaign)
    return 0


def _wake_dispatch() -> None:
    from workers.dispatch import wake_dispatch

    wake_dispatch()


def cmd_cancel(args: argparse.Namespace) -> int:
    from campaigns.services import admin

    engine, flags = _admin_deps()
    _show_campaign(args, admin.cancel_campaign(engine, flags, args.campaign_id))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from campaigns.services import admin

    if not args.contact and not args.phone:
        raise Refused("nothing_to_remove", "name contacts with --contact ID or --phone NUMBER")
    engine, _ = _admin_deps()
    report = admin.remove_contacts(
        engine, args.campaign_id, ids=args.contact or [], phones=args.phone or []
    )

    def human() -> None:
        for item in report.items:
            note = f"  {item.message}" if item.message else ""
            print(f"{item.contact:<20} {item.result.value}{note}")
        print(f"removed {report.removed}")

    _emit(args, report, human)
    return 0


# --------------------------------------------------------------------------- upload


def cmd_upload(args: argparse.Namespace) -> int:
    from workers.ingest import ingest_upload

    runtime = _runtime()
    settings = runtime.settings
    path = Path(args.file)
    if not path.is_file():
        raise Refused("file_not_found", f"{path} is not a file")
    with path.open("rb") as handle:
        spooled = uploads.spool_upload(
            iter(lambda: handle.read(1 << 20), b""),
            settings.spool_dir,
            max_bytes=settings.max_upload_bytes,
        )
    upload = uploads.register_upload(
        runtime.engine,
        args.campaign_id,
        spooled,
        filename=path.name,
        phone_column=args.phone_column,
        region=args.region,
    )
    ingest_upload.delay(upload.id)
    if args.no_wait:
        _emit(args, upload, lambda: print(f"upload {upload.id} queued"))
        return 0
    bar = _ProgressBar(path) if sys.stderr.isatty() and not args.json else None
    final = upload
    for final in uploads.follow_upload(runtime.engine, runtime.redis_url, upload.id):
        if bar is not None:
            bar.show(final.rows_read, final.valid, final.invalid)
    if bar is not None:
        bar.close()

    def human() -> None:
        print(f"upload {final.id}: {final.status}")
        if final.error:
            print(f"  {final.error}")
        print(f"  rows {final.rows_read:,}  valid {final.valid:,}  invalid {final.invalid:,}")
        for reason, n in sorted(final.reasons.items(), key=lambda kv: -kv[1]):
            print(f"    {reason:<24} {n:>9,}")

    _emit(args, final, human)
    return 0 if final.status == "completed" else EXIT_REFUSED


class _ProgressBar:
    """Rows read against an estimate from the file size and the average row length."""

    def __init__(self, path: Path) -> None:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(64 * 1024)
        lines = max(1, head.count(b"\n"))
        self.estimate = max(1, int(size / (len(head) / lines)) - 1)

    def show(self, rows: int, valid: int, invalid: int) -> None:
        share = min(1.0, rows / self.estimate)
        filled = int(share * 30)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {share:4.0%}  "
            f"{rows:,} rows  {valid:,} valid  {invalid:,} invalid"
        )
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def cmd_upload_status(args: argparse.Namespace) -> int:

    upload = uploads.get_upload(_runtime().engine, args.upload_id)
    _emit(args, upload, lambda: print(upload.model_dump_json(indent=2)))
    return 0


def cmd_upload_retry(args: argparse.Namespace) -> int:
    from workers.ingest import ingest_upload

    upload = uploads.mark_upload_for_retry(_runtime().engine, args.upload_id)
    ingest_upload.delay(upload.id)
    _emit(args, upload, lambda: print(f"upload {upload.id} queued again"))
    return 0


def cmd_contacts(args: argparse.Namespace) -> int:
    from campaigns.domain.states import ContactState

    try:
        states = [ContactState(s) for s in args.state or ()]
    except ValueError as exc:
        states_list = ", ".join(s.value for s in ContactState)
        raise Refused("invalid_state", f"{exc}; states: {states_list}") from exc
    engine = _runtime().engine
    if args.csv:
        for block in campaign_contacts.export_contacts_csv(engine, args.campaign_id, states=states):
            sys.stdout.write(block)
        return 0
    page = campaign_contacts.page_contacts(
        engine, args.campaign_id, states=states, after_id=args.after_id, limit=args.limit
    )

    def human() -> None:
        for c in page.items:
            print(
                f"{c.id:>8} line {c.line:>7}  {c.state.value:<16} {c.phone_e164 or c.phone_raw!r}"
                f"  {c.reason or ''}"
            )

    _emit(args, page, human)
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:

    created = tokens.create_api_token(_runtime().engine, args.name)
    _emit(args, created, lambda: print(created.token))
    return 0


# --------------------------------------------------------------------------- processes


def cmd_dev(args: argparse.Namespace) -> int:
    from campaigns.runtime import embedded
    from campaigns.runtime.config import get_settings
    from campaigns.storage import migrate

    data_dir = get_settings().data_dir
    if args.action == "down":
        stopped = embedded.down(data_dir)
        _emit(
            args,
            {"stopped": stopped},
            lambda: print("stopped: " + (", ".join(stopped) or "nothing")),
        )
        return 0
    stores = embedded.up(data_dir)
    migrate.upgrade(stores.database_url)
    payload = {
        "database_url": stores.database_url,
        "redis_url": stores.redis_url,
    }

    def human() -> None:
        print(f"export DATABASE_URL={shlex.quote(stores.database_url)}")
        print(f"export REDIS_URL={shlex.quote(stores.redis_url)}")

    _emit(args, payload, human)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from campaigns.storage import migrate

    runtime = _runtime()
    migrate.upgrade(runtime.database_url)
    _emit(args, {"migrated": True}, lambda: print("schema is at head"))
    return 0


def worker_argv(
    queues: str, concurrency: int | None, *, hostname: str | None = None, beat: bool = False
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "worker",
        "-Q",
        queues,
        "--loglevel",
        "INFO",
        "-E",
        # Worker-to-worker sync we do not use (no revokes, no elections): mingle costs a 1 s
        # inspect round at every start and reconnect, gossip a stream of events per worker
        # and an ERROR line on every broker reconnect. Events (-E) and remote control stay on
        # for Flower and `celery inspect ping` health checks.
        "--without-mingle",
        "--without-gossip",
    ]
    if queues == "ingest":
        # Ingest tasks fan phone parsing out to a process pool, which a daemonic prefork
        # child may not start; threads keep the task in the (non-daemonic) worker process.
        argv += ["--pool", "threads"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    # Distinct names per queue set, so two workers on one host do not merge in inspect/Flower.
    argv += ["--hostname", hostname or f"{queues.replace(',', '-')}@%h"]
    if beat:
        argv += ["--beat", "--schedule", str(_beat_schedule_file())]
    return argv


def _beat_schedule_file() -> Path:
    from campaigns.runtime.config import get_settings

    path = get_settings().data_dir / "celerybeat-schedule"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def cmd_worker(args: argparse.Namespace) -> NoReturn:
    _runtime()  # starts embedded services if needed and exports their URLs to the worker
    os.execv(sys.executable, worker_argv(args.queues, args.concurrency, beat=args.beat))


def cmd_beat(args: argparse.Namespace) -> NoReturn:
    _runtime()
    argv = [sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO"]
    os.execv(sys.executable, [*argv, "--schedule", str(_beat_schedule_file())])


def cmd_simulator(args: argparse.Namespace) -> int:
    from campaigns.dev.simulator.__main__ import main as simulator_main

    simulator_main(args.simulator_args)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from campaigns.runtime.config import get_settings
    from campaigns.runtime.logs import configure_logging

    _runtime()
    configure_logging(json=get_settings().log_json)
    uvicorn.run(
        "campaigns.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level="info",
        log_config=None,  # keep our handler: uvicorn's own would bypass the phone mask
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from campaigns.dev.demo import run_demo

    return run_demo(contacts=args.contacts, as_json=args.json, rate=args.rate)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wa-campaigns", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_)
        p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        p.set_defaults(handler=handler)
        return p

    campaign = sub.add_parser("campaign", help="create and list campaigns")
    campaign_sub = campaign.add_subparsers(dest="campaign_command", required=True)
    p = command("create", cmd_campaign_create, "create a draft campaign", campaign_sub)
    p.add_argument("--name", required=True)
    p.add_argument("--template", help="approved template name")
    p.add_argument("--language", default="en")
    p.add_argument("--region", required=True, help="default region, e.g. DE")
    p.add_argument("--variables", help="CSV columns filling the template body, comma-separated")
    p.add_argument("--phone-number-id", help="sender phone number id")
    p.add_argument("--rate", type=float, default=80.0, help="messages per second (<= 1000)")
    p.add_argument("--max-attempts", type=int, default=5)
    p.add_argument(
        "--send-window",
        metavar="HH:MM-HH:MM",
        help="send only in this daily window of the recipient's local time (may wrap midnight)",
    )
    p.add_argument(
        "--send-window-tz",
        metavar="ZONE",
        help="IANA zone for numbers whose own zones do not settle the window (required with it)",
    )
    command("list", cmd_campaign_list, "list campaigns", campaign_sub)

    p = command("upload", cmd_upload, "upload a contacts CSV and wait for validation")
    p.add_argument("campaign_id", type=int)
    p.add_argument("file")
    p.add_argument("--phone-column")
    p.add_argument("--region", help="override the campaign's default region for this file")
    p.add_argument("--no-wait", action="store_true")

    p = command("upload-status", cmd_upload_status, "show an upload's report")
    p.add_argument("upload_id", type=int)
    p = command("upload-retry", cmd_upload_retry, "queue a failed upload again (resumes)")
    p.add_argument("upload_id", type=int)

    p = command("status", cmd_status, "a campaign's status and counts per state")
    p.add_argument("campaign_id", type=int)

    p = command("contacts", cmd_contacts, "list or export a campaign's contacts")
    p.add_argument("campaign_id", type=int)
    p.add_argument("--state", action="append", help="filter; repeat for several states")
    p.add_argument("--csv", action="store_true", help="export all matching rows as CSV")
    p.add_argument("--after-id", type=int, default=0)
    p.add_argument("--limit", type=int, default=100)

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    p = command("create", cmd_token_create, "create an API bearer token", token_sub)
    p.add_argument("--name", required=True)

    p = command("dev", cmd_dev, "start/stop the embedded Postgres and Redis")
    p.add_argument("action", choices=("up", "down"))
    command("migrate", cmd_migrate, "apply the database migrations")

    p = command("worker", cmd_worker, "run a Celery worker")
    p.add_argument("-Q", "--queues", default="ingest,dispatch,webhooks")
    p.add_argument("-c", "--concurrency", type=int)
    p.add_argument(
        "--beat", action="store_true", help="also run the periodic tick (dev: one worker)"
    )
    command("beat", cmd_beat, "run the periodic scheduler (one per deployment)")

    p = command("simulator", cmd_simulator, "run the Cloud API simulator (see --help)")
    p.add_argument("simulator_args", nargs=argparse.REMAINDER, help="--port, --webhook-url, ...")

    for name, handler, help_ in (
        ("pause", cmd_pause, "pause a running campaign"),
        ("resume", cmd_resume, "resume a paused campaign"),
        ("cancel", cmd_cancel, "cancel a campaign: unsent contacts become canceled_by_admin"),
    ):
        p = command(name, handler, help_)
        p.add_argument("campaign_id", type=int)
    p = command("start", cmd_start, "start a draft campaign now or --at a time")
    p.add_argument("campaign_id", type=int)
    p.add_argument("--at", help="ISO 8601 time with zone, e.g. 2026-12-01T09:00:00Z")
    p = command("remove", cmd_remove, "remove contacts of a draft or paused campaign")
    p.add_argument("campaign_id", type=int)
    p.add_argument("--contact", type=int, action="append", help="contact id; repeatable")
    p.add_argument("--phone", action="append", help="phone number; repeatable")

    p = command("serve", cmd_serve, "run the HTTP service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)

    p = command("demo", cmd_demo, "run a demo campaign end to end")
    p.add_argument("--contacts", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=250.0, help="messages per second")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from campaigns.domain.admin import CommandRefused
    from campaigns.domain.csv_intake import UploadRefused
    from campaigns.domain.refusals import NotFound
    from campaigns.domain.states import IllegalTransition

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulator"]:
        # Its own parser takes every option (argparse.REMAINDER misses leading options).
        from campaigns.dev.simulator.__main__ import main as simulator_main

        simulator_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (Refused, CommandRefused, UploadRefused) as exc:
        code = exc.code.value if isinstance(exc, UploadRefused) else exc.code
        return _refuse(args, str(code), exc.message)
    except NotFound as exc:
        return _refuse(args, exc.code, str(exc))
    except IllegalTransition as exc:
        return _refuse(args, "illegal_transition", str(exc))


def _refuse(args: argparse.Namespace, code: str, message: str) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": code, "message": message}}))
    print(f"refused: {message}", file=sys.stderr)
    return EXIT_REFUSED


if __name__ == "__main__":
    raise SystemExit(main())
