"""Upload progress over Redis pub/sub, so a waiting CLI is told rather than polling."""

from __future__ import annotations

import redis

from campaigns.clients import redis_keys
from schemas.api import UploadOut


def channel(client: redis.Redis, upload_id: int) -> str:
    """The upload's progress channel, named with the client's db: deployments (or test runs)
    on other dbs of the same Redis server reuse upload ids and must not hear each other."""
    db = int(client.connection_pool.connection_kwargs.get("db", 0))
    return redis_keys.upload_progress(db, upload_id)


class UploadProgressPublisher:
    def __init__(self, redis_url: str) -> None:
        self._redis = redis.Redis.from_url(redis_url)

    def publish(self, upload: UploadOut) -> None:
        self._redis.publish(channel(self._redis, upload.id), upload.model_dump_json())


class UploadProgressSubscription:
    """One upload's progress channel, subscribed at once (before the caller reads the row,
    so no final message can slip between the two)."""

    def __init__(self, redis_url: str, upload_id: int) -> None:
        self._redis = redis.Redis.from_url(redis_url)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._pubsub.subscribe(channel(self._redis, upload_id))

    def next(self, timeout_s: float) -> UploadOut | None:
        """The next published state, or None when nothing came within ``timeout_s``."""
        message = self._pubsub.get_message(timeout=timeout_s)
        if message is not None and message["type"] == "message":
            return UploadOut.model_validate_json(message["data"])
        return None

    def close(self) -> None:
        self._pubsub.close()
        self._redis.close()
