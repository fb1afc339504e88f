"""Celery workers: ``celery -A workers worker -Q ingest,dispatch,webhooks``."""

from workers.app import app

__all__ = ["app"]
