"""``issuer clients``: register OAuth clients, rotate their secrets, disable, enable and list them.

A secret is printed once, at creation or rotation, and never stored in clear (only its digest).
"""

from __future__ import annotations

import json
from typing import Any

import click

from issuer.cli.support import Switched, command_runtime, fail, run, switch_command
from issuer.clients import GRANT_TYPES
from issuer.runtime import Runtime
from issuer.tokens import parse_scope

__all__ = ["clients"]


@click.group()
def clients() -> None:
    """Register and manage OAuth clients."""


def _scope_list(raw: str) -> list[str]:
    try:
        scopes = parse_scope(raw)
    except Exception:
        raise click.BadParameter(
            "scope tokens are printable ASCII without spaces, quotes or backslashes"
        ) from None
    return sorted(scopes or ())


@clients.command("create")
@click.option("--name", required=True, help="A human-readable name.")
@click.option(
    "--grant",
    "grants",
    multiple=True,
    required=True,
    type=click.Choice(GRANT_TYPES),
    help="A grant type the client may use (repeat the option for several).",
)
@click.option("--scope", default="", help='Space-separated scopes the client may ask for, e.g. "read write".')
@click.option(
    "--audience",
    "audiences",
    multiple=True,
    help="`aud` of its access tokens (repeatable; default ISSUER_DEFAULT_AUDIENCE).",
)
@click.option(
    "--access-token-ttl",
    type=click.IntRange(10, 86400),
    default=None,
    help="Access-token lifetime in seconds for this client (default ISSUER_ACCESS_TOKEN_TTL).",
)
@click.option(
    "--can-introspect", is_flag=True, help="Allow this client to call /introspect and /revocations."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {client_id, client_secret}.")
@run
async def clients_create(
    name: str,
    grants: tuple[str, ...],
    scope: str,
    audiences: tuple[str, ...],
    access_token_ttl: int | None,
    can_introspect: bool,
    as_json: bool,
) -> None:
    """Register a client and print its id and secret (the secret is shown only this once)."""
    if not name.strip() or len(name) > 200:
        fail("--name must be 1-200 characters")
    scopes = _scope_list(scope) if scope.strip() else []
    if "refresh_token" in grants and "password" not in grants:
        fail("--grant refresh_token needs a grant that issues refresh tokens (password)")
    for audience in audiences:
        if not audience.strip() or " " in audience:
            fail("--audience must be a URI without spaces")
    async with command_runtime() as runtime:
        created = await runtime.clients.create(
            name=name.strip(),
            grant_types=sorted(set(grants)),
            scopes=scopes,
            audience=list(audiences) or None,
            access_token_ttl=access_token_ttl,
            can_introspect=can_introspect,
        )
    _print_secret(created.client_id, created.client_secret, as_json)
    if not as_json:
        click.echo("The secret is shown only now; store it safely.", err=True)


@clients.command("rotate-secret")
@click.argument("client_id")
@click.option(
    "--keep-previous",
    type=click.IntRange(0, 90 * 86400),
    default=7 * 86400,
    show_default=True,
    help="Seconds the previous secret stays valid (0: it stops working now).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {client_id, client_secret}.")
@run
async def clients_rotate_secret(client_id: str, keep_previous: int, as_json: bool) -> None:
    """Give CLIENT_ID a new secret; the old one keeps working for --keep-previous seconds."""
    async with command_runtime() as runtime:
        rotated = await runtime.clients.rotate_secret(client_id, keep_previous_for=keep_previous)
    _print_secret(rotated.client_id, rotated.client_secret, as_json)
    if not as_json:
        click.echo(f"The previous secret stays valid for {keep_previous} s.", err=True)


def _print_secret(client_id: str, client_secret: str | None, as_json: bool) -> None:
    """The new client's id and secret; a public client has no secret (and none is printed)."""
    if as_json:
        shown = {"client_id": client_id}
        if client_secret is not None:
            shown["client_secret"] = client_secret
        click.echo(json.dumps(shown))
    else:
        click.echo(f"client_id:     {client_id}")
        if client_secret is not None:
            click.echo(f"client_secret: {client_secret}")


async def _set_disabled(runtime: Runtime, client_id: str, disable: bool) -> Switched:
    changed = await runtime.clients.set_disabled(client_id, disable)
    if not disable:
        return f"client {client_id}", changed, None
    cover = runtime.settings.client_cache_ttl  # also what instances issue before their cache expires
    done = await runtime.revocation.revoke_client(
        client_id, reason="client disabled", actor="operator", cover=cover
    )
    return f"client {client_id}", changed, done


_DISABLE = """Disable CLIENT_ID: it fails authentication (invalid_client) at /token, /revoke and /introspect
    on every instance within ISSUER_CLIENT_CACHE_TTL seconds; every login and access token it was
    issued, up to the end of that window, is revoked."""
_ENABLE = """Enable CLIENT_ID again (within ISSUER_CLIENT_CACHE_TTL seconds everywhere); its revoked
    tokens stay revoked."""
clients.add_command(switch_command("disable", "client_id", True, _DISABLE, _set_disabled))
clients.add_command(switch_command("enable", "client_id", False, _ENABLE, _set_disabled))


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@run
async def clients_list(as_json: bool) -> None:
    """List registered clients (never their secrets)."""
    async with command_runtime() as runtime, runtime.db.transaction() as conn:
        rows = await runtime.clients.store.list(conn)
    records: list[dict[str, Any]] = [
        {
            "client_id": r.client_id,
            "name": r.name,
            "grant_types": r.grant_types.split(),
            "scope": r.scope,
            "audience": r.audience,
            "access_token_ttl": r.access_token_ttl,
            "can_introspect": bool(r.can_introspect),
            "disabled": r.disabled_at is not None,
        }
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(records))
    else:
        for r in records:
            click.echo(
                f"{r['client_id']}  {r['name']}  grants={','.join(r['grant_types'])}  scope={r['scope']!r}"
                + ("  disabled" if r["disabled"] else "")
            )
