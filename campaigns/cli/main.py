"""The ``wa-campaigns`` command line: the root group, the features it registers, ``main()``.

One module per feature holds its commands (``COMMANDS``); a new feature is a new module
added to ``FEATURES``. Commands import the heavy parts (database, Redis, Celery) when they
run, so ``--help`` and shell completion stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from campaigns.cli import (
    admin,
    campaigns,
    contacts,
    ops,
    output,
    profiles,
    retry,
    tokens,
    uploads,
)

FEATURES = (campaigns, uploads, admin, retry, contacts, profiles, tokens, ops)

SHELLS = ("bash", "zsh", "fish")


@click.group(
    "wa-campaigns",
    cls=output.RootGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="wa-campaigns", message="%(prog)s %(version)s")
def cli() -> None:
    """WhatsApp template campaigns: CSV intake, dispatch, delivery reports.

    Exit codes: 0 done; 1 unexpected failure; 2 refused or bad usage (nothing was changed);
    130 interrupted; 141 the reader closed the pipe. --json prints one JSON object on stdout.
    """


@cli.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script (bash, zsh, fish).

    Bash: eval "$(wa-campaigns completion bash)" in ~/.bashrc; zsh likewise in ~/.zshrc;
    fish: wa-campaigns completion fish > ~/.config/fish/completions/wa-campaigns.fish.
    """
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)
    assert complete is not None  # click ships all of SHELLS
    root = ctx.find_root()
    script = complete(root.command, {}, root.info_name or "wa-campaigns", "_WA_CAMPAIGNS_COMPLETE")
    output.text(script.source())


for feature in FEATURES:
    for command in feature.COMMANDS:
        cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: runs one command and returns its exit code."""
    return output.run(lambda: cli.main(args=argv, prog_name="wa-campaigns", standalone_mode=False))


if __name__ == "__main__":
    raise SystemExit(main())
