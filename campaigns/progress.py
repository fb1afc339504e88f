"""Upload progress over Redis pub/sub, so a waiting CLI is told rather than polling."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import redis
from sqlalchemy import Engine

from campaigns import services
from schemas.api import UploadOut

FINAL_STATUSES = frozenset({"completed", "refused", "failed"})


def channel(client: redis.Redis, upload_id: int) -> str:
    """The upload's progress channel. Pub/sub channels are server-wide (SELECT does not
    apply to them), so the name carries the client's db: deployments (or test runs) on
    other dbs of the same Redis server reuse upload ids and must not hear each other."""
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return f"wa:upload:{db}:{upload_id}"


class UploadProgressPublisher:
    def __init__(self, redis_url: str) -> None:
        self._redis = redis.Redis.from_url(redis_url)

    def publish(self, upload: UploadOut) -> None:
        self._redis.publish(channel(self._redis, upload.id), upload.model_dump_json())


def follow_upload(
    engine: Engine,
    redis_url: str,
    upload_id: int,
    *,
    recheck_s: float = 2.0,
    give_up: Callable[[], bool] = lambda: False,
) -> Iterator[UploadOut]:
    """Yields the upload as it progresses until it is completed, refused or failed.

    Subscribes first, then reads the row, so no final message can slip between the two; a
    periodic re-read covers a message lost while Redis restarted.
    """
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel(client, upload_id))
    try:
        current = services.get_upload(engine, upload_id)
        yield current
        while current.status not in FINAL_STATUSES and not give_up():
            message = pubsub.get_message(timeout=recheck_s)
            if message is not None and message["type"] == "message":
                current = UploadOut.model_validate_json(message["data"])
            else:
                current = services.get_upload(engine, upload_id)
            yield current
    finally:
        pubsub.close()
        client.close()
