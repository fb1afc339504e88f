"""The published API contract under Schemathesis (issue 17 item 8).

Every operation of ``/openapi.json`` but the platform's signed webhooks is fuzzed against the
real app under a real uvicorn (the server settings ``wa-campaigns serve`` uses), on the real
embedded Postgres and Redis, with a bearer token, a campaign and an upload present, and every
Schemathesis check on: no 5xx, every status and header documented, bodies as published,
schema-valid input accepted and schema-invalid input refused, auth not ignored.

Bounded for CI: ``WA_FUZZ_EXAMPLES`` examples per operation (default 8) in the fuzzing phase,
after the examples and coverage phases; derandomized, no deadline, no example database, so a
run is the same run every time. ``WA_FUZZ_EXAMPLES=200`` fuzzes longer; ``WA_FUZZ_SEED`` picks
another deterministic run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from sqlalchemy import Engine

from campaigns.api.app import create_app
from tests.conftest import API_TOKEN
from tests.security.support import serving

EXAMPLES = int(os.environ.get("WA_FUZZ_EXAMPLES", "8"))
SEED = int(os.environ.get("WA_FUZZ_SEED", "17"))
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

# Schema-valid input a schema cannot refuse, as the operations describe: a phone number's
# validity (its numbering plan), a CSV's content, whether a profile schema's fields hang
# together. Everything else schema-valid must be accepted.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]
CANNOT_SHOW = [
    {
        "include-path-regex": r"\{phone\}",
        "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
    },
    {
        "include-name": "POST /campaigns/{campaign_id}/uploads",
        "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}},
    },
    {
        "include-name": "POST /contacts/schemas",
        "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
    },
]

# The same options as `st run --checks all`, in schemathesis.toml's shape.
CONFIG: dict[str, Any] = {
    "seed": SEED,
    "suppress-health-check": ["all"],
    "checks": {"enabled": True},
    # Unknown query parameters are ignored, as HTTP APIs do (and the dashboard's cache
    # busters need): not generated.
    "generation": {"deterministic": True, "database": "none", "allow-extra-parameters": False},
    "operations": [
        # Signed by the platform, not by our token: their own suite (tests/security/test_inputs.py).
        {"include-path": "/webhooks/whatsapp", "enabled": False},
        *CANNOT_SHOW,
    ],
}

SCHEMA = schemathesis.openapi.from_dict(
    create_app().openapi(), config=SchemathesisConfig.from_dict(CONFIG)
)


@SCHEMA.hook("filter_failure")
def _window_start_equals_end(
    context: Any, failure: Any, case: schemathesis.Case[Any], response: Any
) -> bool:
    """The one rule of POST /campaigns its schema describes but cannot express (JSON Schema
    has no back-references): a send window whose start equals its end (09:00-09:00,
    00:00-24:00) is refused. Only that refusal is dropped; every other failure is kept."""
    return not (
        case.operation.label == "POST /campaigns"
        and response.status_code == 422
        and "start and end are equal" in response.text
    )


@pytest.fixture(scope="module")
def base_url(stack: dict[str, str]) -> Iterator[str]:
    with serving() as base:
        yield base


@pytest.fixture
def seeded(db: Engine, base_url: str) -> dict[str, int]:
    """A clean database with a campaign (id 1) and its upload (id 1), through the API."""
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as client:
        campaign = client.post(
            "/campaigns",
            json={"name": "fuzz", "template": "t", "region": "DE", "body_variables": ["name"]},
        )
        assert campaign.status_code == 201, campaign.text
        cid = campaign.json()["id"]
        upload = client.post(
            f"/campaigns/{cid}/uploads",
            content=b"phone,name\n+4915123456789,Ann\n",
            headers={"Content-Type": "text/csv"},
        )
        assert upload.status_code == 202, upload.text
    return {"campaign_id": cid, "upload_id": upload.json()["id"]}


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_holds_its_published_contract(
    case: schemathesis.Case[Any], base_url: str, seeded: dict[str, int]
) -> None:
    case.call_and_validate(base_url=base_url, headers=AUTH, timeout=30)
