"""The ``issuer`` command: serve, migrate, and register clients and users.

Every subcommand has ``--help``; bad input and unreachable services exit non-zero with a
one-line ``issuer: error: ...`` on stderr. Secrets are printed once and never taken from argv.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from typing import Any

import click

from issuer.cli.sessions import revoked_lines
from issuer.cli.support import run
from issuer.clients import GRANT_TYPES
from issuer.errors import TemporarilyUnavailable
from issuer.runtime import Runtime
from issuer.settings import SettingsError, load
from issuer.tokens import parse_scope

__all__ = ["main"]


def fail(message: str) -> None:
    raise click.ClickException(message)


async def _runtime(*, check_schema: bool = True) -> Runtime:
    runtime = Runtime(load())
    if check_schema:
        try:
            await runtime.check_schema()
        except BaseException:
            await runtime.close()
            raise
    return runtime


class IssuerGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            raise click.ClickException(f"bad setting: {error}") from None


@click.group(cls=IssuerGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """issuer: an OAuth 2 token server (JWT access tokens, rotating refresh tokens).

    Configuration comes from ISSUER_* environment variables; see the README.
    """


def _show(self: click.ClickException, file: Any = None) -> None:
    """Every error is one line on stderr: ``issuer: error: ...`` (usage errors too)."""
    message = self.format_message() if isinstance(self, click.UsageError) else self.message
    command = self.ctx.command_path if isinstance(self, click.UsageError) and self.ctx else "issuer"
    click.echo(f"{command}: error: {' '.join(message.split())}", err=True)


click.ClickException.show = _show  # type: ignore[method-assign]
click.UsageError.show = _show  # type: ignore[method-assign]


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log verbosity of the issuer (and of uvicorn's start/stop lines).",
)
@click.option(
    "--log-libraries",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log verbosity of third-party libraries (database drivers, SQLAlchemy, Redis, HTTP "
    "clients) [default: warning, or --log-level when higher]. At debug they print SQL parameters "
    "and rows; the redaction still applies, but raise it only to diagnose.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker processes (each a full issuer); more than 1 needs PostgreSQL.",
)
def serve(host: str, port: int, log_level: str, log_libraries: str | None, workers: int) -> None:
    """Run the token server (HTTP) until interrupted; SIGTERM drains in-flight requests, then exits.

    On the embedded default (SQLite) the database is created or upgraded and a signing key
    generated on first start; on PostgreSQL run `issuer db upgrade` first. ISSUER_URL must be
    https, except on loopback (a warning) or with ISSUER_ALLOW_INSECURE_URL=true.

    X-Forwarded-For and X-Forwarded-Proto are believed only from the peers listed in
    ISSUER_TRUSTED_PROXIES (empty by default: the client address is the TCP peer's).

    Request heads, slow clients and open connections are bounded per process
    (ISSUER_MAX_HEADER_BYTES, ISSUER_MAX_HEADER_FIELDS, ISSUER_HEADER_TIMEOUT, ISSUER_BODY_TIMEOUT,
    ISSUER_MAX_CONNECTIONS).

    With --workers N, GET /metrics answers for the whole server (every worker's counters summed,
    prometheus_client's multiprocess mode): the workers share a fresh private directory (0700)
    made at start and removed at exit, or the operator's PROMETHEUS_MULTIPROC_DIR, used as it is
    (never emptied or removed).
    """
    import logging.config

    import uvicorn

    from issuer.app import create_app
    from issuer.deployment import check_url, check_workers
    from issuer.http.limits import LimitedHttpToolsProtocol
    from issuer.observability.logs import dict_config
    from issuer.observability.metrics import share_metrics

    settings = load()
    log_config = dict_config(
        log_level, log_libraries
    )  # JSON lines on stderr, secrets redacted (issuer.observability.logs)
    logging.config.dictConfig(log_config)
    insecure = check_url(settings)  # https; http on loopback (a warning); refused elsewhere
    check_workers(settings, workers)  # one line of error for SQLite; a warning without Redis
    if insecure:  # after every refusal, so that a refusal stays one line
        logging.getLogger("issuer").warning(insecure)
    share_metrics(workers)  # before the workers start: their common directory, removed at exit
    app: Any = create_app(settings) if workers == 1 else "issuer.app:create_app"
    uvicorn.run(
        app,
        factory=workers > 1,  # each worker process builds its own app and Runtime from the environment
        workers=workers if workers > 1 else None,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config,  # applied again in each worker process
        access_log=False,
        loop="uvloop",
        # httptools with bounded heads, head and body timeouts and a connection cap (issuer.http.limits)
        http=LimitedHttpToolsProtocol.configure(settings),
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
        # Forwarding headers only from the operator's proxies (uvicorn matches addresses and CIDR
        # networks); none listed: never, whatever FORWARDED_ALLOW_IPS says.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        # uvicorn kills a worker that does not answer its ping in time, starting ones too
        timeout_worker_healthcheck=settings.worker_healthcheck_timeout,
    )


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@run
async def db_upgrade() -> None:
    """Apply every pending Alembic migration to ISSUER_DATABASE_URL."""
    from issuer.store import migrations

    settings = load()
    runtime = Runtime(settings)
    try:
        try:
            await asyncio.to_thread(migrations.upgrade, settings.database_url)
        except Exception as error:
            from issuer.store.database import is_outage

            if is_outage(error) or isinstance(error, OSError):
                raise TemporarilyUnavailable(detail=type(error).__name__) from error
            raise
        async with runtime.db.transaction() as conn:
            click.echo(f"database at revision {await migrations.current(conn)}")
    finally:
        await runtime.close()


@main.group()
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
    runtime = await _runtime()
    try:
        created = await runtime.clients.create(
            name=name.strip(),
            grant_types=sorted(set(grants)),
            scopes=scopes,
            audience=list(audiences) or None,
            access_token_ttl=access_token_ttl,
            can_introspect=can_introspect,
        )
    finally:
        await runtime.close()
    if as_json:
        click.echo(json.dumps({"client_id": created.client_id, "client_secret": created.client_secret}))
    else:
        click.echo(f"client_id:     {created.client_id}")
        click.echo(f"client_secret: {created.client_secret}")
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
    runtime = await _runtime()
    try:
        rotated = await runtime.clients.rotate_secret(client_id, keep_previous_for=keep_previous)
    finally:
        await runtime.close()
    if as_json:
        click.echo(json.dumps({"client_id": rotated.client_id, "client_secret": rotated.client_secret}))
    else:
        click.echo(f"client_id:     {rotated.client_id}")
        click.echo(f"client_secret: {rotated.client_secret}")
        click.echo(f"The previous secret stays valid for {keep_previous} s.", err=True)


@clients.command("disable")
@click.argument("client_id")
@run
async def clients_disable(client_id: str) -> None:
    """Disable CLIENT_ID: it fails authentication (invalid_client) at /token, /revoke and /introspect
    on every instance within ISSUER_CLIENT_CACHE_TTL seconds; every login and access token it was
    issued, up to the end of that window, is revoked."""
    runtime = await _runtime()
    try:
        changed = await runtime.clients.set_disabled(client_id, True)
        done = await runtime.revocation.revoke_client(
            client_id, reason="client disabled", actor="operator", cover=runtime.settings.client_cache_ttl
        )
    finally:
        await runtime.close()
    click.echo(f"client {client_id} " + ("disabled" if changed else "was already disabled"))
    for line in revoked_lines(done):
        click.echo(line)


@clients.command("enable")
@click.argument("client_id")
@run
async def clients_enable(client_id: str) -> None:
    """Enable CLIENT_ID again (within ISSUER_CLIENT_CACHE_TTL seconds everywhere); its revoked
    tokens stay revoked."""
    runtime = await _runtime()
    try:
        changed = await runtime.clients.set_disabled(client_id, False)
    finally:
        await runtime.close()
    click.echo(f"client {client_id} " + ("enabled" if changed else "was not disabled"))


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@run
async def clients_list(as_json: bool) -> None:
    """List registered clients (never their secrets)."""
    runtime = await _runtime()
    try:
        async with runtime.db.transaction() as conn:
            rows = await runtime.clients.store.list(conn)
    finally:
        await runtime.close()
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


@main.group()
def users() -> None:
    """Register and manage users (resource owners) of the password grant."""


def _read_password(confirm: bool) -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat password: ") != password:
            fail("the passwords do not match")
        return password
    line = sys.stdin.readline()
    if not line:
        fail("no password on standard input")
    return line.rstrip("\r\n")


@users.command("create")
@click.option("--username", required=True, help="The login name (unique).")
@run
async def users_create(username: str) -> None:
    """Create a user; the password is read from stdin (or prompted for on a TTY), never from argv."""
    password = _read_password(confirm=True)
    runtime = await _runtime()
    try:
        user_id = await runtime.users.create(username, password)
    finally:
        await runtime.close()
    click.echo(f"user {username} created with subject {user_id}")


@users.command("set-password")
@click.option("--username", required=True, help="The login name.")
@click.option(
    "--keep-sessions",
    is_flag=True,
    help="Leave the user's logins and access tokens alive (default: revoke them all).",
)
@run
async def users_set_password(username: str, keep_sessions: bool) -> None:
    """Replace a user's password (read from stdin, or prompted for on a TTY) and end every login
    of the user: all refresh tokens, and every access token issued up to now (unless --keep-sessions)."""
    password = _read_password(confirm=True)
    runtime = await _runtime()
    try:
        user_id = await runtime.users.set_password(username, password)
        click.echo(f"password of {username} ({user_id}) replaced")
        if keep_sessions:
            click.echo("sessions kept (--keep-sessions): existing logins and access tokens stay valid")
            return
        done = await runtime.revocation.revoke_subject(user_id, reason="password changed", actor="operator")
    finally:
        await runtime.close()
    for line in revoked_lines(done):
        click.echo(line)


@users.command("disable")
@click.argument("username")
@run
async def users_disable(username: str) -> None:
    """Disable USERNAME: no new logins, every login and access token revoked now (run it again to
    repeat the revocation)."""
    runtime = await _runtime()
    try:
        user_id, changed = await runtime.users.set_disabled(username, True)
        done = await runtime.revocation.revoke_subject(user_id, reason="user disabled", actor="operator")
    finally:
        await runtime.close()
    click.echo(f"user {username} ({user_id}) " + ("disabled" if changed else "was already disabled"))
    for line in revoked_lines(done):
        click.echo(line)


@users.command("enable")
@click.argument("username")
@run
async def users_enable(username: str) -> None:
    """Enable USERNAME again: it may log in; tokens revoked while it was disabled stay revoked."""
    runtime = await _runtime()
    try:
        user_id, changed = await runtime.users.set_disabled(username, False)
    finally:
        await runtime.close()
    click.echo(f"user {username} ({user_id}) " + ("enabled" if changed else "was not disabled"))


@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the README's settings table.")
def settings_command(markdown: bool) -> None:
    """Print every ISSUER_* setting with its default (or, without --markdown, its current value).

    Keys and tokens show as (set); the passwords in database and Redis URLs as ***.
    """
    from issuer.settings import SPECS, mask_url

    urls = ("database_url", "redis_url")  # shown with their passwords masked
    if markdown:
        click.echo("| variable | default | meaning |")
        click.echo("|---|---|---|")
        for spec in SPECS:
            shown_default = mask_url(spec.default) if spec.default and spec.field in urls else spec.default
            default = "unset" if shown_default is None else f"`{shown_default}`" if shown_default else "empty"
            click.echo(f"| `{spec.env}` | {default} | {spec.doc} |")
        return
    current = load()
    for spec in SPECS:
        value = getattr(current, spec.field)
        if isinstance(value, tuple):  # ISSUER_TRUSTED_PROXIES
            value = ",".join(value)
        secret = spec.field in ("key_encryption_key", "hmac_key", "metrics_token")
        shown = "(set)" if secret and value else mask_url(value) if value and spec.field in urls else value
        click.echo(f"{spec.env}={'' if shown is None else shown}")


from issuer.cli.keys import keys as _keys  # noqa: E402  (the operator key commands, also scripts/rotate_keys.py)

main.add_command(_keys)

from issuer.cli.sessions import audit as _audit  # noqa: E402  (issuer audit tail)
from issuer.cli.sessions import sessions as _sessions  # noqa: E402  (issuer sessions list|revoke)

main.add_command(_sessions)
main.add_command(_audit)
