"""API bearer tokens: ``token create``, ``token list``, ``token revoke``."""

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


@token_group.command("list")
@output.json_option
def list_() -> None:
    """List tokens, revoked ones too (never the secret)."""
    from campaigns.runtime.stores import resolve
    from campaigns.services import tokens

    found = tokens.list_tokens(resolve().engine)
    output.emit(
        {"tokens": [t.model_dump(mode="json") for t in found]},
        [
            f"{t.id:>5}  {t.name:<24} created {t.created_at:%Y-%m-%d %H:%M}"
            + (f"  revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "")
            for t in found
        ],
    )


@token_group.command("revoke")
@click.argument("name")
@output.json_option
def revoke(name: str) -> None:
    """Revoke every live token of NAME: its next request gets a 401."""
    from campaigns.runtime.stores import resolve
    from campaigns.services import tokens

    revoked = tokens.revoke_token(resolve().engine, name)
    output.emit(
        {"revoked": [t.model_dump(mode="json") for t in revoked]},
        f"revoked {len(revoked)} token(s) named {name!r}",
    )


COMMANDS: tuple[click.Command, ...] = (token_group,)
