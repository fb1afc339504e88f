"""Upload progress over Redis pub/sub (campaigns.clients.upload_progress) on the real Redis server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from campaigns.clients import upload_progress as progress
from campaigns.runtime.stores import resolve
from campaigns.services import campaigns as campaign_service
from campaigns.services import uploads
from schemas.api import CampaignCreate, UploadOut


@pytest.fixture
def upload(db: Engine) -> Iterator[UploadOut]:
    """An upload registered but never queued: nobody will process it (nor remove its spooled
    file, which other tests expect gone)."""
    campaign = campaign_service.create_campaign(db, CampaignCreate(name="p", region="DE"))
    spooled = uploads.spool_upload(
        iter([b"phone\n+4915123456701\n"]), resolve().settings.spool_dir, max_bytes=1 << 20
    )
    yield uploads.register_upload(db, campaign.id, spooled, filename="mine.csv")
    spooled.path.unlink(missing_ok=True)


def other_db(redis_url: str) -> str:
    base, db = redis_url.rsplit("/", 1)
    assert db != "0"
    return f"{base}/0"  # the test server's db 0: no test worker uses it (tests/conftest.py)


def follow_while_publishing(
    engine: Engine, upload: UploadOut, publisher: progress.UploadProgressPublisher
) -> list[UploadOut]:
    """Follows the upload for a few rechecks while ``publisher`` announces it as completed."""
    foreign = upload.model_copy(update={"status": "completed", "valid": 25, "filename": "x.csv"})
    subscribed = threading.Event()
    yields = 0

    def give_up() -> bool:
        nonlocal yields
        yields += 1
        subscribed.set()
        return yields > 3

    def announce() -> None:
        subscribed.wait(timeout=10)  # follow_upload subscribes before its first yield
        publisher.publish(foreign)

    announcer = threading.Thread(target=announce)
    announcer.start()
    try:
        updates: Iterator[UploadOut] = uploads.follow_upload(
            engine, resolve().redis_url, upload.id, recheck_s=0.3, give_up=give_up
        )
        return list(updates)
    finally:
        announcer.join()


def test_progress_on_another_redis_db_is_not_heard(db: Engine, upload: UploadOut) -> None:
    # Pub/sub channels are server-wide: a run on another db with the same upload id (test
    # workers, a second deployment) used to finish this follower with its own numbers.
    stranger = progress.UploadProgressPublisher(other_db(resolve().redis_url))
    updates = follow_while_publishing(db, upload, stranger)
    assert updates and {(u.status, u.filename) for u in updates} == {("received", "mine.csv")}


def test_progress_on_the_same_db_is_heard(db: Engine, upload: UploadOut) -> None:
    same = progress.UploadProgressPublisher(resolve().redis_url)
    updates = follow_while_publishing(db, upload, same)
    assert (updates[-1].status, updates[-1].valid) == ("completed", 25)
