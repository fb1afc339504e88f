"""Resolves where Postgres and Redis are: the configured URLs, or the embedded services."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import Engine

from campaigns.runtime import embedded
from campaigns.runtime.config import Settings, get_settings
from campaigns.storage import migrate
from campaigns.storage.engine import get_engine


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    database_url: str
    redis_url: str

    @property
    def engine(self) -> Engine:
        return get_engine(self.database_url)


_RUNTIME: Runtime | None = None


def resolve(*, migrate_embedded: bool = True) -> Runtime:
    """Starts embedded services when the URLs are unset and exports the URLs for child processes.

    The embedded database is migrated on first use; a configured one is migrated by
    ``wa-campaigns migrate`` (the compose/Kubernetes migrate job), never behind the operator's back.
    """
    global _RUNTIME
    if _RUNTIME is not None:
        return _RUNTIME
    settings = get_settings()
    database_url, redis_url = settings.database_url, settings.redis_url
    if not database_url or not redis_url:
        services = embedded.up(settings.data_dir)
        if not database_url:
            database_url = services.database_url
            os.environ["DATABASE_URL"] = database_url
            if migrate_embedded:
                migrate.upgrade(database_url)
        if not redis_url:
            redis_url = services.redis_url
            os.environ["REDIS_URL"] = redis_url
    _RUNTIME = Runtime(settings=settings, database_url=database_url, redis_url=redis_url)
    return _RUNTIME


def resolved() -> Runtime | None:
    """The runtime :func:`resolve` made, without starting or migrating anything; None before."""
    return _RUNTIME


def reset() -> None:
    """Forget the resolved runtime (tests switch databases)."""
    global _RUNTIME
    _RUNTIME = None
    get_settings.cache_clear()
