"""The one process supervisor of the dev tools: the demo, the tests' live stacks and the
benchmarks start their services (API, workers, simulator) through it.

Each child runs in its own session, so a signal to its process group reaches its whole tree
(a Celery master and its pool children) and nothing else. A :class:`Supervisor` stops every
child it started however its ``with`` block ends: TERM to all at once, then each gets
``stop_timeout_s`` to exit before KILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


def cli_argv(*args: str) -> list[str]:
    """``wa-campaigns ARGS`` run by this interpreter (no PATH lookup, same virtualenv)."""
    return [sys.executable, "-m", "campaigns.cli.main", *args]


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


class Child:
    """One process in its own session; its output goes to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        append_log: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the descriptor: ours is closed at once.
        with log_path.open("ab" if append_log else "wb") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        """SIGTERM to the whole process group (a warm shutdown); does not wait."""
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)

    def wait_or_kill(self, timeout_s: float) -> None:
        """Waits for the exit; past ``timeout_s`` the group is killed."""
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        # Pool children of a master that died first are still in its group.
        _signal_group(self.pid, signal.SIGKILL)

    def stop(self, timeout_s: float = 15.0) -> None:
        self.terminate()
        self.wait_or_kill(timeout_s)

    def kill9(self) -> None:
        """SIGKILL to the whole process group: the master and every pool child at once."""
        _signal_group(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


class Supervisor:
    """Children started together (logs in ``log_dir/{name}.log``), all stopped at the end."""

    def __init__(
        self,
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_timeout_s: float = 15.0,
        append_logs: bool = False,
    ) -> None:
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.cwd = cwd
        self.stop_timeout_s = stop_timeout_s
        self.append_logs = append_logs
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        """Starts ``argv`` with the supervisor's environment plus ``env``."""
        child = Child(
            name,
            argv,
            log_path=self.log_dir / f"{name}.log",
            env={**self.env, **(env or {})},
            cwd=cwd or self.cwd,
            append_log=self.append_logs,
        )
        self.children.append(child)
        return child

    def stop(self, name: str) -> None:
        """Stops the children called ``name``."""
        for child in [c for c in self.children if c.name == name]:
            child.stop(self.stop_timeout_s)
            self.children.remove(child)

    def stop_all(self) -> None:
        """TERM to every child at once, then each is waited for (KILL past the timeout)."""
        children, self.children = self.children, []
        for child in children:
            child.terminate()
        for child in children:
            child.wait_or_kill(self.stop_timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
