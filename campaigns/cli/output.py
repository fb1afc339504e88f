"""The one place the command line prints: results, refusals, progress, live views, exit codes.

``--json`` prints exactly one JSON object on stdout; without it the same result is human text.
A refusal prints ``{"error": {"code", "message"}}`` on stdout with ``--json``, otherwise
``error: message`` on stderr, and exits 2. A reader that closes the pipe early
(``... --csv | head -1``) ends the command quietly.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from campaigns.domain.refusals import Refusal

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

EXIT_OK = 0
# 1: an unexpected error, the interpreter's own exit code for it (with the traceback)
EXIT_REFUSED = 2  # refused or bad usage: nothing was changed
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a process ended by SIGINT
EXIT_PIPE_CLOSED = 141  # the reader went away, as a shell reports a process ended by SIGPIPE

_JSON = "wa_campaigns.json"  # the --json flag in ctx.meta, which every nested context shares

F = TypeVar("F", bound=Callable[..., Any])


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:  # on a group (``dev --json up``) it holds for the command below as well
        ctx.meta[_JSON] = True
    return value


def json_option(func: F) -> F:
    """``--json`` on a command: what it prints becomes one JSON object on stdout."""
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_remember_json,
        help="Print one JSON object on stdout.",
    )(func)


def wants_json() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(_JSON, False))


def _as_json(payload: Any) -> str:
    from pydantic import BaseModel  # here, not at import: completion runs on every TAB

    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    return json.dumps(payload, default=str)


def emit(payload: Any, human: str | Iterable[str]) -> None:
    """The result: ``payload`` as JSON with ``--json``, else the ``human`` lines."""
    if wants_json():
        click.echo(_as_json(payload))
    elif isinstance(human, str):
        click.echo(human)
    else:
        for line in human:
            click.echo(line)


def text(value: str) -> None:
    """Plain text on stdout, the same with or without ``--json`` (a completion script)."""
    click.echo(value)


def stream(blocks: Iterable[str]) -> None:
    """Raw text (a CSV export) to stdout as it is produced."""
    for block in blocks:
        sys.stdout.write(block)


def refuse(refusal: Refusal, *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"error": refusal.as_dict()}))
    else:
        click.echo(f"error: {refusal.message}", err=True)


class RootGroup(click.Group):
    """The top group: a refusal raised by any command below it is rendered here, one way;
    a closed pipe ends it quietly."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Refusal as refusal:
            refuse(refusal, as_json=bool(ctx.meta.get(_JSON, False)))
            raise click.exceptions.Exit(EXIT_REFUSED) from None
        except BrokenPipeError:  # caught here, before click turns it into a plain exit 1
            _drop_stdout()
            raise click.exceptions.Exit(EXIT_PIPE_CLOSED) from None


def run(invoke: Callable[[], Any]) -> int:
    """Runs the command line (click in non-standalone mode) and returns the exit code.

    Click's own errors (bad usage: exit 2) print click's message; an unexpected exception
    propagates with its traceback (exit 1).
    """
    try:
        code = invoke()
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("Aborted!", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_PIPE_CLOSED
    return code if isinstance(code, int) else EXIT_OK


def _drop_stdout() -> None:
    """Points stdout at /dev/null, so the interpreter's final flush does not fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured in tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class Progress:
    """A progress bar on stderr, on a terminal and without ``--json`` only (else silent)."""

    def __init__(self, length: int) -> None:
        self._bar: ProgressBar[str] | None = None
        if not wants_json() and sys.stderr.isatty():
            self._bar = click.progressbar(
                length=max(1, length), file=sys.stderr, item_show_func=lambda text: text
            )

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.render_finish()

    def show(self, position: int, text: str) -> None:
        bar = self._bar
        if bar is None:
            return
        if bar.length is not None and position > bar.length:  # the estimate was short
            bar.length = position
        bar.current_item = text
        if position > bar.pos:  # no step while nothing moved: click's ETA would be nonsense
            bar.make_step(position - bar.pos)
        bar.render_progress()

    def done(self) -> None:
        """The work is complete: the bar ends full whatever the estimate said."""
        if self._bar is not None:
            self._bar.length = max(1, self._bar.pos)
            self._bar.render_progress()


class LiveView:
    """Redraws a block of lines in place on a terminal; elsewhere prints each changed block."""

    def __init__(self, footer: str) -> None:
        self.footer = footer
        self.terminal = sys.stdout.isatty()
        self._drawn = 0
        self._last: Sequence[str] = ()

    def show(self, lines: Sequence[str]) -> None:
        if not self.terminal:
            if list(lines) != list(self._last):
                click.echo("\n".join([*lines, ""]))
            self._last = lines
            return
        width = shutil.get_terminal_size().columns - 1  # a wrapped line would break the count
        block = [line[:width] for line in (*lines, f"{time.strftime('%H:%M:%S')}  {self.footer}")]
        # Up to the first line drawn last time, clear to the end of the screen, draw again.
        up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        click.echo(up + "\n".join(block))
        self._drawn = len(block)
