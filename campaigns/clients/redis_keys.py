"""Every Redis key of the project, in one place: what lives in Redis and who writes it.

All of them start with ``wa:``; Celery's broker keys share the db (one list per queue,
``unacked``, ``_kombu.*``) and never do. Modules build their keys through these functions,
so a key is spelled once.
"""

from __future__ import annotations

ROOT = "wa"

# --------------------------------------------------------------------------- dispatch

PAUSED = f"{ROOT}:paused"
"""``{PAUSED}:{campaign_id}`` exists while a campaign must not send (admin or auto pause)."""

RATE_BUCKET = f"{ROOT}:rl"
"""``{RATE_BUCKET}:{sender_id}``: the sender number's token bucket (hash), at its platform
limit (``SENDER_MAX_RATE_PER_S``)."""

CAMPAIGN_BUCKET = f"{ROOT}:rl:campaign"
"""``{CAMPAIGN_BUCKET}:{campaign_id}``: the campaign's own token bucket (hash), at its fair
share of its sender."""

TIER = f"{ROOT}:tier"
"""``{TIER}:{sender_id}``: recipients messaged in the rolling 24 h (sorted set)."""

TIER_BLOCKED = f"{ROOT}:tier:blocked"
"""``{TIER_BLOCKED}:{sender_id}``: the tier is full until the key expires."""

LOOP = f"{ROOT}:loop"
"""``{LOOP}:{campaign_id}:{slot}``: a batch chain of the campaign is alive; the value is the
owning dispatcher's token."""

DISPATCH_WAKE = f"{ROOT}:dispatch:wake"
"""Pub/sub channel: start/resume wake every dispatcher (server-wide, like every channel)."""


def paused(campaign_id: int) -> str:
    return f"{PAUSED}:{campaign_id}"


def rate_bucket(sender_id: str) -> str:
    return f"{RATE_BUCKET}:{sender_id}"


def tier(sender_id: str) -> str:
    return f"{TIER}:{sender_id}"


def tier_blocked(sender_id: str) -> str:
    return f"{TIER_BLOCKED}:{sender_id}"


def campaign_bucket(campaign_id: int) -> str:
    return f"{CAMPAIGN_BUCKET}:{campaign_id}"


def loop(campaign_id: int, slot: int) -> str:
    return f"{LOOP}:{campaign_id}:{slot}"


# --------------------------------------------------------------------------- telemetry

TELEMETRY = f"{ROOT}:m"
"""Counters every process adds to and ``/metrics`` reads (:mod:`campaigns.clients.telemetry`)."""

MESSAGES = f"{TELEMETRY}:msg"  # hash "{campaign_id}|{outcome}" -> messages
PROVIDER_ERRORS = f"{TELEMETRY}:err"  # hash "{code}" -> provider errors
SEND_LATENCY = f"{TELEMETRY}:lat"  # histogram hash
WEBHOOK_EVENTS = f"{TELEMETRY}:wh"  # hash "{status}" -> webhook status events
WEBHOOK_LAG = f"{TELEMETRY}:whlag"  # histogram hash
LIMITER = f"{TELEMETRY}:lim"  # hash waits, wait_s
UPLOAD_ROWS = f"{TELEMETRY}:upl"  # hash valid / invalid -> rows validated
SUPPRESSED = f"{TELEMETRY}:supp"  # hash "{reason}" -> contacts the registry refused
CONTACT_CHECKS = f"{TELEMETRY}:chk"  # hash "{status}|{cached}" -> contacts checks answered


def rate_second(campaign_id: int, second: int) -> str:
    """Accepted sends of a campaign in one unix second (expires after ``RATE_TTL_S``)."""
    return f"{TELEMETRY}:rate:{campaign_id}:{second}"


def queue_head_seen(task_id: str) -> str:
    """When a task id was first seen at the head of its Celery queue (its age's start)."""
    return f"{TELEMETRY}:qseen:{task_id}"


# --------------------------------------------------------------------------- contact checks

CHECK = f"{ROOT}:check"


def contact_check_sender(sender_id: str) -> str:
    """The rate limiter's name of a sender's contact checks: its bucket is
    ``rate_bucket(contact_check_sender(s))`` = ``wa:rl:check:{sender_id}``, apart from sends."""
    return f"check:{sender_id}"


def check_pending(e164: str) -> str:
    """Set (NX, with a TTL) while a no_wait check of the number is queued: asked once."""
    return f"{CHECK}:pending:{e164}"


def check_campaign(campaign_id: int) -> str:
    """Held (NX, with a TTL the task refreshes) while a campaign's contacts check runs."""
    return f"{CHECK}:campaign:{campaign_id}"


# --------------------------------------------------------------------------- uploads, webhooks


def upload_progress(db: int, upload_id: int) -> str:
    """The pub/sub channel of an upload's progress. Channels are server-wide (SELECT does not
    apply to them), so the name carries the db: other dbs of the same server reuse ids."""
    return f"{ROOT}:upload:{db}:{upload_id}"


WEBHOOK_KICK = f"{ROOT}:webhooks:kick"
"""Set (NX, PX the debounce window) by the receiver that queued the webhook applier."""
