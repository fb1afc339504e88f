"""API bearer tokens: ``token create``."""

from __future__ import annotations

import click

from campaigns.cli import output


@click.group("token")
def token_group() -> None:
    """API bearer tokens."""


@token_group.command("create")
@click.option("--name", required=True, help="Who or what the token is for.")
@output.json_option
def create(name: str) -> None:
    """Create an API bearer token (printed once; only its hash is kept)."""
    from campaigns.runtime.stores import resolve
    from campaigns.services import tokens

    created = tokens.create_api_token(resolve().engine, name)
    output.emit(created, created.token)


COMMANDS: tuple[click.Command, ...] = (token_group,)
