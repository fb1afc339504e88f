"""The Celery app: queues, reliability settings, per-process setup."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_after_setup,
    setup_logging,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutting_down,
)
from kombu import Queue

from campaigns.runtime import collector
from campaigns.runtime.config import get_settings
from campaigns.runtime.logs import configure_logging
from campaigns.runtime.queues import QUEUES
from campaigns.runtime.stores import resolve
from campaigns.storage.engine import dispose_after_fork

TASK_MODULES = ["workers.ingest", "workers.dispatch", "workers.webhooks", "workers.contact_checks"]

# Periodic work (one `celery beat` per deployment). Each entry is cheap when idle.
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Starts due scheduled campaigns, wakes the dispatchers (one per dispatch worker
    # process), settles expired leases, completes campaigns with nothing left to send.
    "dispatch-tick": {"task": "workers.dispatch.tick", "schedule": 1.0},
    # Applies inbox rows whose first try did not match (unknown wamid yet) and stragglers.
    "webhooks-sweep": {"task": "workers.webhooks.sweep_inbox", "schedule": 2.0},
    # Deletes applied webhook bodies older than WEBHOOK_INBOX_RETENTION_H.
    "webhooks-prune": {"task": "workers.webhooks.prune_inbox", "schedule": 60.0},
}


def make_app() -> Celery:
    runtime = resolve()
    app = Celery("wa_campaigns", broker=runtime.redis_url, include=TASK_MODULES)
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="dispatch",
        task_routes={
            "workers.ingest.*": {"queue": "ingest"},
            "workers.dispatch.*": {"queue": "dispatch"},
            # Checks come before a campaign's sends; the dispatch workers run them.
            "workers.contact_checks.*": {"queue": "dispatch"},
            "workers.webhooks.*": {"queue": "webhooks"},
        },
        beat_schedule=BEAT_SCHEDULE,
        # A task is acknowledged after it ran; a worker killed mid-task gets it redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Longer than any countdown we use, so Redis never redelivers a task still waiting.
        broker_transport_options={"visibility_timeout": 2 * 3600},
        # Batch tasks run for seconds to minutes: never hoard messages another worker could run.
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        # Reconnects after a broker restart instead of dying (see the class).
        broker_transport="workers.broker:RedisTransport",
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    return app


app = make_app()
# Celery's "current app" is per thread: without this, `.delay()` from a pool thread or a
# FastAPI threadpool would build its own default app (AMQP broker) instead of this one.
app.set_default()


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Our handler (LOG_JSON, phone numbers masked) instead of Celery's, in workers and beat."""
    configure_logging(json=get_settings().log_json, level=loglevel or logging.INFO)
    # One line per HTTP request at INFO would drown the worker log at 1,000 messages/s.
    logging.getLogger("httpx").setLevel(logging.WARNING)


# Each process of a worker that consumes the dispatch queue runs one dispatcher (a thread with
# an event loop serving every running campaign, workers.dispatch.start_dispatcher): the pool
# processes of a prefork worker, else the worker process itself.
_DISPATCHER_ENV = "WA_DISPATCHER"


@celeryd_after_setup.connect
def _note_dispatch_worker(instance: Any = None, **_: Any) -> None:
    """In the worker's main process, once -Q is applied and before the pool starts."""
    queues = set(instance.app.amqp.queues.consume_from) if instance is not None else set()
    if "dispatch" not in queues:
        return
    prefork = getattr(instance.pool_cls, "__module__", "").endswith("prefork")
    os.environ[_DISPATCHER_ENV] = "pool" if prefork else "main"


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    dispose_after_fork()
    collector.settle()  # set up: freeze it (runtime.collector)
    if os.environ.get(_DISPATCHER_ENV) == "pool":
        from billiard.process import current_process

        from workers.dispatch import start_dispatcher

        start_dispatcher(preferred_slot=int(getattr(current_process(), "index", 0) or 0))


@worker_ready.connect
def _dispatcher_in_main(**_: Any) -> None:
    collector.settle()  # the main process: a solo or threads pool's tasks run here
    if os.environ.get(_DISPATCHER_ENV) == "main":
        from workers.dispatch import start_dispatcher

        start_dispatcher()


@worker_process_shutdown.connect
@worker_shutting_down.connect
def _stop_dispatcher(**_: Any) -> None:
    """A warm shutdown: the dispatcher stops opening groups, and its answers in flight are
    waited for (up to the request timeout) and recorded."""
    if os.environ.get(_DISPATCHER_ENV):
        from workers.dispatch import stop_dispatcher

        stop_dispatcher(timeout_s=get_settings().whatsapp_timeout_s + 5)
