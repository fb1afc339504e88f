"""Production refuses weak settings: placeholder or short tokens, placeholder secrets and
passwords. Unit tests of the rules; tests/security/test_startup.py starts real processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from campaigns.runtime import config
from campaigns.runtime.config import Settings, is_placeholder

STRONG_TOKEN = "Tq3v9ZyR2mXk7LpW4sNd8FhJ6bGc1AeU"  # 32 characters
GOOD = {
    "ENVIRONMENT": "production",
    "DATABASE_URL": "postgresql+psycopg://wa:Vb7Hq2Lm9Zx4@db.internal:5432/wa",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "API_TOKENS": STRONG_TOKEN,
    "WHATSAPP_TOKEN": "EAAGm0PX4ZCpsBAKZCZBq9XyQ",
    "WHATSAPP_APP_SECRET": "9f86d081884c7d659a2feaa0c55ad015",
    "WHATSAPP_VERIFY_TOKEN": "hook-5fa1c0de9b",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for key, value in GOOD.items():
        monkeypatch.setenv(key, value)
    config.get_settings.cache_clear()
    yield monkeypatch
    config.get_settings.cache_clear()


def refusal(env: pytest.MonkeyPatch, **overrides: str) -> str:
    for key, value in overrides.items():
        env.setenv(key, value)
    with pytest.raises(ValueError, match="ENVIRONMENT=production refuses") as refused:
        Settings()
    return str(refused.value)


def test_real_secrets_start_in_production(env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.is_production
    assert settings.configured_api_tokens() == {STRONG_TOKEN}


@pytest.mark.parametrize(
    "token",
    [
        "change-me",
        "changeme",
        "CHANGE-ME",
        "dev-api-token",
        "demo-token",
        "test-token-0123456789",
        "example",
        "dev-" + "x" * 40,  # long, but a placeholder all the same
        "test" + "y" * 40,
        "example-" + "z" * 40,
    ],
)
def test_placeholder_api_tokens_are_refused(env: pytest.MonkeyPatch, token: str) -> None:
    message = refusal(env, API_TOKENS=f"{STRONG_TOKEN},{token}")
    assert "API_TOKENS holds a placeholder token" in message
    if len(token) > 12:  # the message names the variable, never the value
        assert token not in message


@pytest.mark.parametrize("token", ["a" * 31, "Zq8" * 10, "wac_short"])
def test_api_tokens_shorter_than_32_characters_are_refused(
    env: pytest.MonkeyPatch, token: str
) -> None:
    message = refusal(env, API_TOKENS=f"{token},{STRONG_TOKEN}")
    assert "API_TOKENS holds a token shorter than 32 characters" in message


@pytest.mark.parametrize("mode", ["production", "Production", "PRODUCTION", " production "])
def test_production_is_compared_case_insensitively(env: pytest.MonkeyPatch, mode: str) -> None:
    assert "API_TOKENS" in refusal(env, ENVIRONMENT=mode, API_TOKENS="change-me")


@pytest.mark.parametrize("name", ["WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"])
@pytest.mark.parametrize("value", ["change-me", "dev-secret", "demo-verify", "test", ""])
def test_placeholder_whatsapp_secrets_are_refused(
    env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    assert f"{name} must be set to a real secret" in refusal(env, **{name: value})


@pytest.mark.parametrize("password", ["change-me", "wa", "postgres", "dev-postgres", "example"])
def test_a_placeholder_database_password_is_refused(env: pytest.MonkeyPatch, password: str) -> None:
    url = f"postgresql+psycopg://wa:{password}@db.internal:5432/wa"
    assert "DATABASE_URL holds a placeholder password" in refusal(env, DATABASE_URL=url)


def test_a_placeholder_redis_password_is_refused_and_none_is_fine(
    env: pytest.MonkeyPatch,
) -> None:
    message = refusal(env, REDIS_URL="redis://:change-me@redis.internal:6379/0")
    assert "REDIS_URL holds a placeholder password" in message
    env.setenv("REDIS_URL", "redis://:Kd83hQz0vB@redis.internal:6379/0")
    assert Settings().redis_url
    env.setenv("DATABASE_URL", "postgresql+psycopg://wa@db.internal:5432/wa")  # .pgpass, IAM
    assert Settings().database_url


def test_every_problem_is_named_at_once(env: pytest.MonkeyPatch) -> None:
    message = refusal(
        env,
        API_TOKENS="change-me",
        WHATSAPP_TOKEN="dev-token",
        DATABASE_URL="postgresql+psycopg://wa:wa@db/wa",
    )
    for part in ("API_TOKENS", "WHATSAPP_TOKEN", "DATABASE_URL"):
        assert part in message


def test_development_keeps_the_demo_values(env: pytest.MonkeyPatch) -> None:
    env.setenv("ENVIRONMENT", "development")
    env.setenv("API_TOKENS", "dev-api-token")
    env.setenv("WHATSAPP_TOKEN", "dev-token")
    assert Settings().configured_api_tokens() == {"dev-api-token"}


def test_placeholder_rule() -> None:
    for value in ("change-me", " Changeme ", "dev-x", "demo_y", "testing", "example.org", "<set>"):
        assert is_placeholder(value), value
    for value in (STRONG_TOKEN, "EAAGm0PX4ZCpsBAKZCZBq9XyQ", "prod-8f3k2", "latest-contest"):
        assert not is_placeholder(value), value


def test_get_settings_ends_the_process_with_one_line_and_code_2(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("API_TOKENS", "change-me")
    with pytest.raises(SystemExit) as exited:
        config.get_settings()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("wa-campaigns: invalid settings: ENVIRONMENT=production refuses:")
    assert "API_TOKENS holds a placeholder token" in err
    assert "Traceback" not in err and "pydantic" not in err


def test_any_invalid_setting_is_one_line_naming_the_variable(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("MAX_UPLOAD_BYTES", "lots")
    with pytest.raises(SystemExit):
        config.get_settings()
    err = capsys.readouterr().err
    assert "MAX_UPLOAD_BYTES:" in err and err.count("\n") == 1
