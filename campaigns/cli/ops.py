"""Processes and operations: ``worker``, ``beat``, ``serve``, ``migrate``, ``simulator``,
``dev up|down`` and ``demo``. Compose, the Kubernetes manifests, the Dockerfile and the demo
run these exact commands (tests/unit/test_deploy_manifests.py checks them)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import NoReturn

import click

from campaigns.cli import output

DEFAULT_QUEUES = "ingest,dispatch,webhooks"


def worker_argv(
    queues: str, concurrency: int | None, *, hostname: str | None = None, beat: bool = False
) -> list[str]:
    """The Celery command line ``wa-campaigns worker`` execs (also the benchmarks' workers)."""
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


def _resolve_stores() -> None:
    """Starts the embedded stores if no URLs are set, and exports their URLs to children."""
    from campaigns.runtime.stores import resolve

    resolve()


@click.command("worker")
@click.option(
    "-Q", "--queues", default=DEFAULT_QUEUES, show_default=True, help="Queues to consume."
)
@click.option("-c", "--concurrency", type=int, help="Processes (threads for ingest).")
@click.option("--beat", is_flag=True, help="Also run the periodic tick (dev: one worker).")
@output.json_option
def worker(queues: str, concurrency: int | None, beat: bool) -> NoReturn:
    """Run a Celery worker."""
    _resolve_stores()
    os.execv(sys.executable, worker_argv(queues, concurrency, beat=beat))


@click.command("beat")
@output.json_option
def beat() -> NoReturn:
    """Run the periodic scheduler (one per deployment)."""
    _resolve_stores()
    argv = [sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO"]
    os.execv(sys.executable, [*argv, "--schedule", str(_beat_schedule_file())])


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to bind.")
@output.json_option
def serve(host: str, port: int) -> None:
    """Run the HTTP service."""
    import uvicorn

    from campaigns.api.server import uvicorn_config
    from campaigns.runtime.config import get_settings
    from campaigns.runtime.logs import configure_logging

    _resolve_stores()
    settings = get_settings()
    configure_logging(json=settings.log_json)
    uvicorn.run(
        "campaigns.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        # Bounded requests and concurrency, no server header, and our log handler (uvicorn's
        # own would bypass the phone mask): the service's settings, in one place.
        **uvicorn_config(settings),
    )


@click.command("migrate")
@output.json_option
def migrate() -> None:
    """Apply the database migrations."""
    from campaigns.runtime.stores import resolve
    from campaigns.storage import migrate as migrations

    migrations.upgrade(resolve().database_url)
    output.emit({"migrated": True}, "schema is at head")


@click.command(
    "simulator",
    # Every argument, --help included, goes to the simulator's own parser.
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
@click.argument("simulator_args", nargs=-1, type=click.UNPROCESSED)
def simulator(simulator_args: tuple[str, ...]) -> None:
    """Run the Cloud API simulator (simulator --help).

    Every argument goes to the simulator's own parser: --port, --webhook-url, ...
    """
    from campaigns.dev.simulator.__main__ import main as simulator_main

    simulator_main(list(simulator_args))


@click.group("dev")
@output.json_option
def dev_group() -> None:
    """Start or stop the embedded Postgres and Redis.

    They live under DATA_DIR (./.data by default).
    """


@dev_group.command("up")
@output.json_option
def dev_up() -> None:
    """Start them, migrate, and print the exports: eval "$(wa-campaigns dev up)"."""
    from campaigns.runtime import embedded
    from campaigns.runtime.config import get_settings
    from campaigns.storage import migrate as migrations

    stores = embedded.up(get_settings().data_dir)
    migrations.upgrade(stores.database_url)
    output.emit(
        {"database_url": stores.database_url, "redis_url": stores.redis_url},
        [
            f"export DATABASE_URL={shlex.quote(stores.database_url)}",
            f"export REDIS_URL={shlex.quote(stores.redis_url)}",
        ],
    )


@dev_group.command("down")
@output.json_option
def dev_down() -> None:
    """Stop them."""
    from campaigns.runtime import embedded
    from campaigns.runtime.config import get_settings

    stopped = embedded.down(get_settings().data_dir)
    output.emit({"stopped": stopped}, "stopped: " + (", ".join(stopped) or "nothing"))


@click.command("demo")
@click.option("--contacts", type=int, default=10_000, show_default=True, help="Contacts to send.")
@click.option("--rate", type=float, default=250.0, show_default=True, help="Messages per second.")
@output.json_option
def demo(contacts: int, rate: float) -> None:
    """Run a demo campaign end to end.

    Starts the embedded stores, the simulator, the HTTP service and workers, sends a
    campaign and prints a summary.
    """
    from campaigns.dev.demo import run_demo

    code = run_demo(contacts=contacts, as_json=output.wants_json(), rate=rate)
    if code:
        raise click.exceptions.Exit(code)


COMMANDS: tuple[click.Command, ...] = (
    worker,
    beat,
    serve,
    migrate,
    simulator,
    dev_group,
    demo,
)
