"""The Celery queues, one per kind of work (workers/app.py routes tasks to them; the API's
metrics and dashboard read their depth). Here, not in workers/app.py, so that reading them
does not build the Celery app."""

from __future__ import annotations

QUEUES = ("ingest", "dispatch", "webhooks")
