"""Webhook POSTs as they arrive: the signature checked on the raw bytes, the body stored raw
in the inbox (one group commit for concurrent POSTs), answered at once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy import Engine

from campaigns.domain import bounded_json
from campaigns.domain.refusals import Refusal, RefusalKind
from campaigns.domain.webhooks import REASON_CHARS
from campaigns.storage import webhooks as webhooks_db
from schemas.whatsapp import verify_signature

log = logging.getLogger(__name__)


class WebhookRefused(Refusal):
    """A webhook POST that is not stored (never answered 200); its kind says why."""

    default_kind = RefusalKind.FORBIDDEN
    refusal_code: ClassVar[str] = "webhook_refused"

    def __init__(self, message: str) -> None:
        super().__init__(self.refusal_code, message)


class WebhookSecretMissing(WebhookRefused):
    default_kind = RefusalKind.UNAVAILABLE
    refusal_code = "webhook_not_configured"


class SignatureMissing(WebhookRefused):
    default_kind = RefusalKind.UNAUTHENTICATED
    refusal_code = "signature_missing"


class SignatureInvalid(WebhookRefused):
    default_kind = RefusalKind.FORBIDDEN
    refusal_code = "signature_invalid"


class BodyTooLarge(WebhookRefused):
    default_kind = RefusalKind.TOO_LARGE
    refusal_code = "body_too_large"

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"webhook bodies are limited to {limit_bytes} bytes")


@dataclass(frozen=True)
class Received:
    inbox_id: int
    status: str  # "pending" (to be applied) or "rejected" (stored with the reason)
    reason: str | None = None


def verify_webhook(raw_body: bytes, signature_header: str | None, app_secret: str) -> None:
    """Raises unless ``X-Hub-Signature-256`` signs these exact bytes with the app secret.

    Checked before anything looks at the body (constant time, in
    :func:`schemas.whatsapp.verify_signature`).
    """
    if not app_secret:
        raise WebhookSecretMissing(
            "WHATSAPP_APP_SECRET is not set: webhooks cannot be verified and are refused"
        )
    if not signature_header:
        raise SignatureMissing("the X-Hub-Signature-256 header is missing")
    if not verify_signature(raw_body, signature_header, app_secret):
        raise SignatureInvalid("X-Hub-Signature-256 does not match the body")


def store_webhooks(engine: Engine, verified_bodies: Sequence[bytes]) -> list[Received]:
    """Stores bodies whose signature :func:`verify_webhook` accepted, in one transaction.

    A signed body that is not JSON is stored as rejected with the reason: answering 200
    stops the platform from retrying it for a week, and operators still see it. The
    receiver stores concurrent POSTs together: one INSERT and one WAL flush (group commit).
    """
    if not verified_bodies:
        return []
    reasons = [_not_json_reason(body) for body in verified_bodies]
    rows = [
        (body, "rejected" if reason else "pending", reason)
        for body, reason in zip(verified_bodies, reasons, strict=True)
    ]
    with engine.begin() as conn:
        ids = webhooks_db.insert_inbox_many(conn, rows)
    out = []
    for inbox_id, (_, status, reason) in zip(ids, rows, strict=True):
        if reason:
            log.warning("webhook %s stored as rejected: %s", inbox_id, reason)
        out.append(Received(inbox_id, status, reason))
    return out


def _not_json_reason(raw_body: bytes) -> str | None:
    try:
        doc = bounded_json.loads(raw_body)  # a RecursionError here failed the whole group
    except ValueError as exc:  # includes UnicodeDecodeError
        return f"malformed JSON: {exc}"[:REASON_CHARS]
    if not isinstance(doc, dict):
        return f"not a JSON object: {type(doc).__name__}"
    return None
