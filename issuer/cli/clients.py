"""``issuer clients``: register OAuth clients, rotate their secrets, change their redirect URIs,
disable, enable and list them.

A secret is printed once, at creation or rotation, and never stored in clear (only its digest). A
public client (``--public``: browser and native apps) has no secret at all. Registrations the rules
of :func:`issuer.clients.check_registration` refuse are one line on stderr and write nothing.
"""

from __future__ import annotations

import json
from typing import Any

import click

from issuer.cli.support import Switched, command_runtime, fail, run, switch_command
from issuer.clients import GRANT_TYPES, RedirectsUpdated
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
@click.option(
    "--redirect-uri",
    "redirect_uris",
    metavar="URI",
    multiple=True,
    help="Where /authorize may send the browser back (repeatable; needed by --grant authorization_code): "
    "https, http on 127.0.0.1/[::1]/localhost (any port), or a private-use scheme (com.example.app:/cb).",
)
@click.option(
    "--post-logout-redirect-uri",
    "post_logout_redirect_uris",
    metavar="URI",
    multiple=True,
    help="Where /logout may send the browser after signing out (repeatable; the same rules).",
)
@click.option(
    "--public",
    is_flag=True,
    help="A client that cannot keep a secret (browser or native app): no secret, token_endpoint_auth_method "
    "none; only the authorization_code (and refresh_token) grants.",
)
@click.option("--first-party", is_flag=True, help="Skip the consent page for this client (your own apps).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object {client_id, client_secret} ({client_id} for a public client).",
)
@run
async def clients_create(
    name: str,
    grants: tuple[str, ...],
    scope: str,
    audiences: tuple[str, ...],
    access_token_ttl: int | None,
    can_introspect: bool,
    redirect_uris: tuple[str, ...],
    post_logout_redirect_uris: tuple[str, ...],
    public: bool,
    first_party: bool,
    as_json: bool,
) -> None:
    """Register a client and print its id and secret (the secret is shown only this once; a
    --public client has none)."""
    if not name.strip() or len(name) > 200:
        fail("--name must be 1-200 characters")
    scopes = _scope_list(scope) if scope.strip() else []
    if "refresh_token" in grants and not {"password", "authorization_code"} & set(grants):
        fail(
            "--grant refresh_token needs a grant that issues refresh tokens (password or authorization_code)"
        )
    for audience in audiences:
        if not audience.strip() or " " in audience:
            fail("--audience must be a URI without spaces")
    async with command_runtime() as runtime:
        try:
            created = await runtime.clients.create(
                name=name.strip(),
                grant_types=sorted(set(grants)),
                scopes=scopes,
                audience=list(audiences) or None,
                access_token_ttl=access_token_ttl,
                can_introspect=can_introspect,
                redirect_uris=list(redirect_uris),
                post_logout_redirect_uris=list(post_logout_redirect_uris),
                public=public,
                first_party=first_party,
            )
        except ValueError as error:  # check_registration: the rules of browser sign-in
            fail(str(error))
    _print_secret(created.client_id, created.client_secret, as_json)
    if not as_json and created.client_secret is not None:
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
    """Give CLIENT_ID a new secret; the old one keeps working for --keep-previous seconds (a public
    client has no secret: refused)."""
    async with command_runtime() as runtime:
        try:
            rotated = await runtime.clients.rotate_secret(client_id, keep_previous_for=keep_previous)
        except ValueError as error:  # a public client
            fail(str(error))
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


@clients.command("update")
@click.argument("client_id")
@click.option(
    "--add-redirect-uri",
    "add_redirects",
    metavar="URI",
    multiple=True,
    help="Register this redirect URI too (repeatable).",
)
@click.option(
    "--remove-redirect-uri",
    "remove_redirects",
    metavar="URI",
    multiple=True,
    help="Unregister this redirect URI, exactly as listed (repeatable).",
)
@click.option(
    "--add-post-logout-redirect-uri",
    "add_logouts",
    metavar="URI",
    multiple=True,
    help="Register this post-logout redirect URI too (repeatable).",
)
@click.option(
    "--remove-post-logout-redirect-uri",
    "remove_logouts",
    metavar="URI",
    multiple=True,
    help="Unregister this post-logout redirect URI, exactly as listed (repeatable).",
)
@click.option(
    "--first-party/--third-party",
    "first_party",
    default=None,
    help="Skip the consent page (first-party) or show it (third-party); unchanged when not given.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def clients_update(
    client_id: str,
    add_redirects: tuple[str, ...],
    remove_redirects: tuple[str, ...],
    add_logouts: tuple[str, ...],
    remove_logouts: tuple[str, ...],
    first_party: bool | None,
    as_json: bool,
) -> None:
    """Change CLIENT_ID's redirect URIs or first-party flag and print the result; the same rules as
    at creation (an authorization_code client keeps at least one redirect URI). Applies everywhere
    within ISSUER_CLIENT_CACHE_TTL seconds."""
    if not (add_redirects or remove_redirects or add_logouts or remove_logouts) and first_party is None:
        raise click.UsageError("nothing to change: give --add-*/--remove-* or --first-party/--third-party")
    async with command_runtime() as runtime:
        try:
            updated = await runtime.clients.update_redirects(
                client_id,
                add_redirect_uris=list(add_redirects),
                remove_redirect_uris=list(remove_redirects),
                add_post_logout_redirect_uris=list(add_logouts),
                remove_post_logout_redirect_uris=list(remove_logouts),
                first_party=first_party,
            )
        except ValueError as error:
            fail(str(error))
    _print_update(updated, as_json)


def _print_update(updated: RedirectsUpdated, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "client_id": updated.client_id,
                    "redirect_uris": list(updated.redirect_uris),
                    "post_logout_redirect_uris": list(updated.post_logout_redirect_uris),
                    "first_party": updated.first_party,
                    "changed": updated.changed,
                }
            )
        )
        return
    click.echo(f"client {updated.client_id} " + ("updated" if updated.changed else "unchanged"))
    click.echo("redirect_uris:             " + (" ".join(updated.redirect_uris) or "-"))
    click.echo("post_logout_redirect_uris: " + (" ".join(updated.post_logout_redirect_uris) or "-"))
    click.echo(f"first_party:               {'yes' if updated.first_party else 'no'}")


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@run
async def clients_list(as_json: bool) -> None:
    """List registered clients (never their secrets): grants, scope, redirect URIs, public or
    confidential, first-party."""
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
            "redirect_uris": r.redirect_uris.split(),
            "post_logout_redirect_uris": r.post_logout_redirect_uris.split(),
            "public": bool(r.public),
            "token_endpoint_auth_method": "none" if r.public else "client_secret_basic",
            "first_party": bool(r.first_party),
        }
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(records))
    else:
        for r in records:
            line = (
                f"{r['client_id']}  {r['name']}  grants={','.join(r['grant_types'])}  scope={r['scope']!r}"
                f"  {'public' if r['public'] else 'confidential'}"
            )
            if r["first_party"]:
                line += "  first-party"
            if r["redirect_uris"]:
                line += "  redirect_uris=" + ",".join(r["redirect_uris"])
            if r["post_logout_redirect_uris"]:
                line += "  post_logout_redirect_uris=" + ",".join(r["post_logout_redirect_uris"])
            click.echo(line + ("  disabled" if r["disabled"] else ""))
