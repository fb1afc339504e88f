"""The refusal contract: every kind has one HTTP status, and a refusal's body is its code and
message, nothing else."""

from __future__ import annotations

import json

import pytest

from campaigns.api.errors import STATUS_OF_KIND, BearerRefused, refusal_response
from campaigns.domain.admin import CommandRefused
from campaigns.domain.csv_intake import RefusalCode, UploadRefused
from campaigns.domain.refusals import NotFound, Refusal, RefusalKind
from campaigns.domain.states import IllegalTransition
from campaigns.services.webhooks import receive


def test_every_kind_has_a_status() -> None:
    assert set(STATUS_OF_KIND) == set(RefusalKind)
    assert all(400 <= status < 600 for status in STATUS_OF_KIND.values())


def test_kinds_and_statuses_are_one_to_one() -> None:
    assert len(set(STATUS_OF_KIND.values())) == len(RefusalKind)


@pytest.mark.parametrize(
    ("refusal", "status", "code"),
    [
        (NotFound("campaign", 7), 404, "campaign_not_found"),
        (CommandRefused("no_contacts", "nothing to send"), 409, "no_contacts"),
        (IllegalTransition("campaign", "draft", "paused"), 409, "illegal_transition"),
        (UploadRefused(RefusalCode.EMPTY_FILE, "the file is empty"), 400, "empty_file"),
        (UploadRefused(RefusalCode.TOO_LARGE, "over the limit"), 413, "too_large"),
        (receive.SignatureMissing("no header"), 401, "signature_missing"),
        (receive.SignatureInvalid("bad"), 403, "signature_invalid"),
        (receive.WebhookSecretMissing("unset"), 503, "webhook_not_configured"),
        (receive.BodyTooLarge(10), 413, "body_too_large"),
        (Refusal("stale", "changed since", kind=RefusalKind.PRECONDITION_FAILED), 412, "stale"),
    ],
)
def test_refusal_response(refusal: Refusal, status: int, code: str) -> None:
    response = refusal_response(refusal)
    assert response.status_code == status
    assert json.loads(bytes(response.body)) == {"code": code, "message": refusal.message}
    assert "www-authenticate" not in response.headers


def test_bearer_refusals_carry_the_challenge() -> None:
    response = refusal_response(BearerRefused("invalid_token", "the bearer token is not valid"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
