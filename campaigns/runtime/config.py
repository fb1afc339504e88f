"""All configuration, read from the environment by one settings object."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that only ever stand in for a secret: the demo's, the examples', the tests'.
_PLACEHOLDERS = frozenset(
    {
        "",
        "admin",
        "change-me",
        "changeme",
        "default",
        "password",
        "pass",
        "postgres",
        "redis",
        "secret",
        "token",
        "wa",
        "xxx",
    }
)
_PLACEHOLDER_PREFIXES = (
    "change-me",
    "changeme",
    "change_me",
    "dev-",
    "dev_",
    "demo-",
    "demo_",
    "example",
    "placeholder",
    "replace-me",
    "test",
    "your-",
    "your_",
    "<",
)
MIN_API_TOKEN_CHARS = 32
EXIT_BAD_SETTINGS = 2


def is_placeholder(value: str) -> bool:
    """A value that stands in for a secret (``change-me``, ``dev-*``, ``test*``, ...)."""
    folded = value.strip().lower()
    return folded in _PLACEHOLDERS or folded.startswith(_PLACEHOLDER_PREFIXES)


def _url_password(url: str) -> str | None:
    password = urlsplit(url).password
    return unquote(password) if password is not None else None


def production_problems(settings: Settings) -> list[str]:
    """Why these settings may not run in production; empty when they may.

    A placeholder or a short API token would give anyone who reaches the API full admin;
    placeholder WhatsApp secrets accept forged webhooks; a placeholder database or Redis
    password is the first thing anyone tries.
    """
    problems = []
    tokens = sorted(settings.configured_api_tokens())
    if any(is_placeholder(t) for t in tokens):
        problems.append(
            "API_TOKENS holds a placeholder token (change-me, dev-*, demo-*, test*, ...)"
        )
    if any(len(t) < MIN_API_TOKEN_CHARS for t in tokens):
        problems.append(f"API_TOKENS holds a token shorter than {MIN_API_TOKEN_CHARS} characters")
    for name in ("whatsapp_token", "whatsapp_app_secret", "whatsapp_verify_token"):
        value: SecretStr = getattr(settings, name)
        if is_placeholder(value.get_secret_value()):
            problems.append(f"{name.upper()} must be set to a real secret, not a placeholder")
    for name, url in (("DATABASE_URL", settings.database_url), ("REDIS_URL", settings.redis_url)):
        if not url:
            problems.append(f"{name} must be set (no embedded services in production)")
            continue
        password = _url_password(url)
        if password is not None and is_placeholder(password):
            problems.append(f"{name} holds a placeholder password")
    return problems


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    environment: str = Field(
        "development", description="'production' (any case) refuses placeholder secrets"
    )
    database_url: str | None = Field(None, description="unset: embedded Postgres under DATA_DIR")
    redis_url: str | None = Field(None, description="unset: embedded redis-server under DATA_DIR")
    data_dir: Path = Field(
        Path(".data"), description="embedded services' data and the upload spool"
    )
    upload_dir: Path | None = Field(None, description="spool for uploaded files (shared volume)")

    max_upload_bytes: int = 200 * 1024 * 1024
    max_upload_rows: int = 5_000_000
    max_csv_columns: int = Field(
        16_384, ge=1, description="fields per CSV row (Excel's limit); more refuses the file"
    )
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

    metrics_port: int = Field(
        9100, ge=0, le=65535, description="own listener of /metrics (0: any free port)"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="address of the metrics listener (0.0.0.0 in a container)"
    )
    metrics_query_timeout_s: float = Field(
        5.0, gt=0, description="statement timeout of each scrape's database query"
    )
    http_limit_concurrency: int = Field(
        1000, ge=1, description="connections + requests in flight before the API answers 503"
    )
    http_max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="request line + headers; more closes the connection"
    )

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
    whatsapp_contacts_url: str = Field(
        "",
        description="on-premises / BSP API base for POST /v1/contacts (contacts check); "
        "empty: the registry answers checks from what sends proved",
    )
    whatsapp_contacts_token: SecretStr = Field(
        SecretStr(""), description="bearer token of the contacts endpoint (empty: WHATSAPP_TOKEN)"
    )
    contact_check_ttl_h: float = Field(
        168.0, gt=0, description="hours a contacts check answer is kept and answered again"
    )
    contact_check_rate_per_s: float = Field(
        20.0, gt=0, le=1000, description="contacts checked per second per sender number"
    )
    flower_url: str = Field(
        "http://localhost:5555", description="Flower, linked from the dashboard's queue panel"
    )

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.is_production:
            problems = production_problems(self)
            if problems:
                raise ValueError("ENVIRONMENT=production refuses: " + "; ".join(problems))
        return self

    @property
    def is_production(self) -> bool:
        return self.environment.strip().lower() == "production"

    @property
    def spool_dir(self) -> Path:
        return self.upload_dir or self.data_dir / "uploads"

    def contacts_token(self) -> str:
        token = self.whatsapp_contacts_token.get_secret_value()
        return token or self.whatsapp_token.get_secret_value()

    def configured_api_tokens(self) -> set[str]:
        raw = self.api_tokens.get_secret_value()
        return {t.strip() for t in raw.split(",") if t.strip()}


def settings_error_message(exc: ValidationError) -> str:
    """Pydantic's errors as one line that names each variable, without the input values."""
    parts = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        where = ".".join(str(p) for p in err["loc"]).upper()
        parts.append(f"{where}: {message}" if where else message)
    return "invalid settings: " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings. Invalid ones end the process with one line and exit code 2.

    Every entrypoint (``wa-campaigns serve``, workers, beat, ``python -m uvicorn`` on the app
    factory) reads its settings here first, so a refused production setting stops it
    before it listens or consumes, with a message naming the variable and no traceback.
    """
    try:
        return Settings()
    except ValidationError as exc:
        print(f"wa-campaigns: {settings_error_message(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BAD_SETTINGS) from None
