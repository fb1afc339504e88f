"""The processes an operator runs log through our handler: JSON lines on LOG_JSON, phones masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from campaigns.dev.processes import Child
from campaigns.runtime.embedded import free_port
from tests.fixtures.processes import start_api, start_worker, wait_for

PHONE = "4915123456789"


def json_lines(proc: Child) -> list[dict[str, Any]]:
    out = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))  # a line that starts like JSON must be JSON
    return out


def test_api_and_worker_log_json_lines_with_phone_numbers_masked(
    db: object, tmp_path: Path
) -> None:
    env = {"LOG_JSON": "true"}
    port = free_port()
    api = start_api(env, tmp_path, port)
    worker = start_worker(env, tmp_path, name="worker-webhooks", queues="webhooks")
    try:
        # uvicorn's access log carries the path: a phone number in it must be masked.
        response = httpx.get(f"http://127.0.0.1:{port}/campaigns/{PHONE}")
        assert response.status_code in (401, 404, 422)

        def access_logged() -> list[dict[str, Any]]:
            return [r for r in json_lines(api) if r["logger"] == "uvicorn.access"]

        access = wait_for(access_logged, timeout=10, what="the API's access log line")
        assert any("/campaigns/*********6789" in r["message"] for r in access), access
        assert all("color_message" not in r for r in json_lines(api))  # no ANSI copies

        def worker_ready() -> list[dict[str, Any]]:
            return [r for r in json_lines(worker) if r["message"].endswith("ready.")]

        ready = wait_for(worker_ready, timeout=30, what="the worker's ready line in JSON")
        assert ready[0]["logger"].startswith("celery")
        assert {"ts", "level", "process"} <= set(ready[0])
    finally:
        worker.stop()
        api.stop()
    assert PHONE not in api.log_path.read_text() + worker.log_path.read_text()
