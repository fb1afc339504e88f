"""The security suite: probes of issue 17, on the same real Postgres/Redis as integration."""

from __future__ import annotations

from tests.integration.conftest import api, ingest_worker

__all__ = ["api", "ingest_worker"]
