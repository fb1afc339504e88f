"""Real processes refuse to start with a weak production setting: exit code 2 and one line
naming the variable, no traceback. The API under plain ``python -m uvicorn`` on the app
factory, the CLI's ``serve``, a Celery worker and beat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from campaigns.runtime.config import Settings
from tests.security.test_settings import GOOD

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "wa-campaigns"

COMMANDS = {
    "uvicorn": [
        sys.executable,
        "-m",
        "uvicorn",
        "campaigns.api.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ],
    "serve": [str(CLI), "serve", "--host", "127.0.0.1", "--port", "0"],
    "celery worker": [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "worker",
        "--pool",
        "solo",
        "-Q",
        "ingest",
    ],
    "wa-campaigns worker": [str(CLI), "worker", "-Q", "dispatch"],
    "beat": [str(CLI), "beat"],
}


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(GOOD)
    # Unreachable on purpose: a process that got past its settings would hang or fail there.
    env["DATABASE_URL"] = "postgresql+psycopg://wa:Vb7Hq2Lm9Zx4@127.0.0.1:9/wa"
    env["REDIS_URL"] = "redis://127.0.0.1:9/0"
    env.update(overrides)
    return env


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_placeholder_token_stops_the_process_at_start(name: str) -> None:
    done = subprocess.run(
        COMMANDS[name],
        env=_env(ENVIRONMENT="Production", API_TOKENS="change-me"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if "invalid settings" in line]
    assert len(lines) == 1, done.stderr[-2000:]
    assert "API_TOKENS holds a placeholder token" in lines[0]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def test_a_short_token_stops_the_api_naming_the_variable() -> None:
    done = subprocess.run(
        COMMANDS["uvicorn"],
        env=_env(API_TOKENS="Zq8" * 10),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "API_TOKENS holds a token shorter than 32 characters" in done.stderr
