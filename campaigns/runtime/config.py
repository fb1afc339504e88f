"""All configuration, read from the environment by one settings object."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDERS = {"", "change-me", "changeme", "dev-secret", "dev-token", "secret", "test"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    environment: str = Field("development", description="'production' refuses placeholder secrets")
    database_url: str | None = Field(None, description="unset: embedded Postgres under DATA_DIR")
    redis_url: str | None = Field(None, description="unset: embedded redis-server under DATA_DIR")
    data_dir: Path = Field(
        Path(".data"), description="embedded services' data and the upload spool"
    )
    upload_dir: Path | None = Field(None, description="spool for uploaded files (shared volume)")

    max_upload_bytes: int = 200 * 1024 * 1024
    max_upload_rows: int = 5_000_000
    ingest_chunk_rows: int = 10_000
    ingest_parse_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        description="processes parsing phones per upload (needs a non-prefork ingest worker)",
    )

    api_tokens: SecretStr = Field(SecretStr(""), description="comma-separated bearer tokens")

    whatsapp_api_url: str = "https://graph.facebook.com"
    whatsapp_api_version: str = "v21.0"
    whatsapp_token: SecretStr = SecretStr("")
    whatsapp_phone_number_id: str = ""
    whatsapp_app_secret: SecretStr = SecretStr("")
    whatsapp_verify_token: SecretStr = SecretStr("")

    whatsapp_timeout_s: float = Field(10.0, description="per request; later = outcome unknown")
    whatsapp_messaging_limit: int = Field(
        0, ge=0, description="unique recipients per sender number per rolling 24 h (0: unlimited)"
    )

    sender_max_rate_per_s: float = Field(
        1000.0,
        gt=0,
        description="a sender number's platform throughput: its campaigns' rates together "
        "never pass it (shared in proportion to their rates when they ask for more)",
    )
    dispatch_parallel_batches: int = Field(
        2, ge=1, description="batch chains per running campaign (spread over dispatch workers)"
    )
    dispatch_concurrency: int = Field(200, ge=1, description="sends in flight per batch")
    dispatch_loop_ttl_s: int = Field(
        30, ge=2, description="a batch chain whose worker died is restarted after this long"
    )
    dispatch_lease_margin_s: float = Field(
        60.0, gt=0, description="lease of a claimed batch beyond twice its sending time"
    )
    unknown_error_pause_after: int = Field(
        20,
        ge=1,
        description="consecutive 4xx answers with an error code the table does not know "
        "before dispatch pauses the campaign (code and message in status_reason)",
    )
    outcome_unknown_grace_s: float = Field(
        600.0,
        ge=0,
        description="wait for a webhook after a lease expired before Error 'outcome unknown'",
    )

    log_json: bool = False

    webhook_apply_batch: int = Field(
        50, ge=1, description="inbox rows (POST bodies, up to ~50 statuses each) per transaction"
    )
    webhook_drain_budget_s: float = Field(
        5.0, gt=0, description="seconds one apply task drains the inbox before re-queueing"
    )
    webhook_kick_debounce_ms: int = Field(
        200, ge=1, description="the receiver queues at most one apply task per this window"
    )
    webhook_retry_base_s: float = Field(
        1.0, gt=0, description="first backoff of a status matching no contact yet (doubles)"
    )
    webhook_retry_max_tries: int = Field(
        10, ge=1, description="tries before an unmatched status is reported to operators"
    )
    webhook_retry_max_age_s: float = Field(
        3600.0, gt=0, description="age after which an unmatched status is reported anyway"
    )
    webhook_inbox_retention_h: float = Field(
        168.0,
        ge=0,
        description="hours applied webhook bodies are kept for inspection (0 keeps them)",
    )
    opt_out_words: str = Field(
        "STOP,UNSUBSCRIBE",
        description="comma-separated replies that opt a phone out (case/spacing ignored)",
    )
    flower_url: str = Field(
        "http://localhost:5555", description="Flower, linked from the dashboard's queue panel"
    )

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        for name in ("whatsapp_token", "whatsapp_app_secret", "whatsapp_verify_token"):
            value: SecretStr = getattr(self, name)
            if value.get_secret_value().strip().lower() in _PLACEHOLDERS:
                raise ValueError(f"{name.upper()} must be set to a real secret in production")
        if not self.database_url or not self.redis_url:
            raise ValueError("DATABASE_URL and REDIS_URL must be set in production")
        return self

    @property
    def spool_dir(self) -> Path:
        return self.upload_dir or self.data_dir / "uploads"

    def configured_api_tokens(self) -> set[str]:
        raw = self.api_tokens.get_secret_value()
        return {t.strip() for t in raw.split(",") if t.strip()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
