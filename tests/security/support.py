"""Helpers of the security suite."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(env: Mapping[str, str] | None = None) -> Iterator[str]:
    """The real app under a real uvicorn with the server settings ``wa-campaigns serve``
    uses (:func:`campaigns.api.server.uvicorn_config`), in a thread; yields its base URL."""
    import uvicorn

    from campaigns.api.app import create_app
    from campaigns.api.server import uvicorn_config
    from campaigns.runtime.config import get_settings
    from tests.conftest import exported

    with exported(dict(env or {})):
        port = _free_port()
        config = uvicorn.Config(
            create_app(), host="127.0.0.1", port=port, **uvicorn_config(get_settings())
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="uvicorn-security", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("uvicorn did not start")
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)
