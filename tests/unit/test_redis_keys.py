"""Redis key names outlive a deploy (pause flags, buckets, tier sets, counters are
read by the next release): their spelling is pinned here."""

from __future__ import annotations

import fakeredis

from campaigns.clients import redis_keys as keys
from campaigns.clients import upload_progress


def test_key_names_are_stable() -> None:
    assert keys.paused(7) == "wa:paused:7"
    assert keys.rate_bucket("555") == "wa:rl:555"
    assert keys.tier("555") == "wa:tier:555"
    assert keys.tier_blocked("555") == "wa:tier:blocked:555"
    assert keys.campaign_bucket(7) == "wa:rl:campaign:7"
    assert keys.DISPATCH_WAKE == "wa:dispatch:wake"
    assert keys.loop(7, 1) == "wa:loop:7:1"
    assert keys.rate_second(7, 1700000000) == "wa:m:rate:7:1700000000"
    assert keys.queue_head_seen("t1") == "wa:m:qseen:t1"
    assert keys.upload_progress(3, 9) == "wa:upload:3:9"
    assert keys.WEBHOOK_KICK == "wa:webhooks:kick"
    assert keys.rate_bucket(keys.contact_check_sender("555")) == "wa:rl:check:555"
    assert keys.check_pending("+4915") == "wa:check:pending:+4915"
    assert keys.check_campaign(7) == "wa:check:campaign:7"
    hashes = (
        keys.MESSAGES,
        keys.PROVIDER_ERRORS,
        keys.SEND_LATENCY,
        keys.WEBHOOK_EVENTS,
        keys.WEBHOOK_LAG,
        keys.LIMITER,
        keys.UPLOAD_ROWS,
        keys.SUPPRESSED,
        keys.CONTACT_CHECKS,
    )
    assert hashes == (
        "wa:m:msg",
        "wa:m:err",
        "wa:m:lat",
        "wa:m:wh",
        "wa:m:whlag",
        "wa:m:lim",
        "wa:m:upl",
        "wa:m:supp",
        "wa:m:chk",
    )


def test_upload_channels_carry_the_db() -> None:
    client = fakeredis.FakeRedis(db=4)
    assert upload_progress.channel(client, 9) == "wa:upload:4:9"
