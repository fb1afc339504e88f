"""The broker transport, apart from the Celery app (importing ``workers.app`` builds the app,
which resolves the stores)."""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as redis_transport


class _RedisChannel(redis_transport.Channel):  # type: ignore[misc]
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            raise redis.exceptions.ConnectionError("channel of a lost broker connection")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params


class RedisTransport(redis_transport.Transport):  # type: ignore[misc]
    """kombu's Redis transport, minus two crashes when the broker connection drops.

    On a lost connection Celery 5.7 drops the connection's transport and then closes it; a
    closed channel has no client left. Two things then still use such a channel: closing it
    restores the unacked acks-late messages, and a task still running when the connection
    dropped acks its message when it ends. Both reached kombu as ``AttributeError`` ("'NoneType'
    object has no attribute 'hostname'" / "'client'"), which Celery does not expect, and the
    worker died ("Unrecoverable error") instead of reconnecting (a Redis restart took down
    every worker with a batch running). As a connection error Celery logs it and goes on. The
    message stays in Redis's unacked set and comes back after the visibility timeout; our
    tasks carry ids only, so a late duplicate costs nothing.
    """

    Channel = _RedisChannel
