"""Engine creation: one engine per URL and process; a forked Celery child drops the parent's."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine

_ENGINES: dict[str, Engine] = {}


def get_engine(url: str) -> Engine:
    engine = _ENGINES.get(url)
    if engine is None:
        engine = create_engine(
            url,
            pool_size=5,
            max_overflow=10,
            pool_pre_ping=True,  # survives a Postgres restart mid-campaign
            pool_recycle=1800,
        )
        _ENGINES[url] = engine
    return engine


def dispose_after_fork() -> None:
    """In a forked child: never reuse the parent's sockets (close=False leaves them to it)."""
    for engine in _ENGINES.values():
        engine.dispose(close=False)
