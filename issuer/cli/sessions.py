"""Operators' revocation commands: ``issuer sessions list|revoke`` (logins: refresh families),
``issuer sessions browser|end-browser`` (browser sessions: the issuer's single sign-on) and
``issuer sessions consents|revoke-consent`` (what users allowed third-party clients).

The logic lives in :mod:`issuer.revocation.service`; this module parses and prints. Each revocation prints
what it revoked, and writes audit events (``issuer audit tail`` shows them). Every failure is one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from issuer.cli.support import command_runtime, iso, revoked_lines, run
from issuer.runtime import Runtime
from issuer.store.signin import StoredSession
from issuer.users import normalize_username

__all__ = ["sessions"]


async def _subject(runtime: Runtime, subject: str | None, username: str | None) -> str | None:
    if username is None:
        return subject
    async with runtime.db.transaction() as conn:
        row = await runtime.users.store.by_username(conn, normalize_username(username))
    if row is None:
        raise LookupError(f"no user {username!r}")
    return str(row.id)


def _one_of(**given: Any) -> None:
    chosen = [name for name, value in given.items() if value is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of " + ", ".join("--" + n.replace("_", "-") for n in given))


@click.group()
def sessions() -> None:
    """List and revoke logins (refresh-token families) and their access tokens, browser sessions
    (single sign-on) and consents."""


@sessions.command("list")
@click.option("--subject", help="The user's subject (`sub`, e.g. usr_...).")
@click.option("--username", help="The user's login name (instead of --subject).")
@click.option("--client", "client_id", help="Every login at this client.")
@click.option("--all", "show_all", is_flag=True, help="Include revoked and expired logins.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@run
async def sessions_list(
    subject: str | None, username: str | None, client_id: str | None, show_all: bool, as_json: bool
) -> None:
    """List a user's (or a client's) logins: family, client, created, last used, state."""
    _one_of(subject=subject, username=username, client=client_id)
    async with command_runtime() as runtime:
        subject = await _subject(runtime, subject, username)
        now = int(time.time())
        async with runtime.db.transaction() as conn:
            rows = await runtime.refresh_store.families(
                conn, subject=subject, client_id=client_id, live_at=None if show_all else now
            )
    records: list[dict[str, Any]] = []
    for row in rows:
        if row.revoked_at is not None:
            state = f"revoked ({row.revoked_reason})"
        elif row.expires_at <= now:
            state = "expired"
        else:
            state = "live"
        records.append(
            {
                "family": row.id,
                "subject": row.subject,
                "client_id": row.client_id,
                "scope": row.scope,
                "created_at": row.created_at,
                "last_used_at": row.last_used_at,
                "expires_at": row.expires_at,
                "revoked_at": row.revoked_at,
                "state": state,
            }
        )
    if as_json:
        click.echo(json.dumps(records))
        return
    if not records:
        click.echo("no sessions", err=True)
    for r in records:
        click.echo(
            f"{r['family']}  subject={r['subject']}  client={r['client_id']}  "
            f"created={iso(r['created_at'])}  last_used={iso(r['last_used_at'])}  {r['state']}"
        )


@sessions.command("revoke")
@click.option("--subject", help="Log this user out everywhere (every login, every access token).")
@click.option("--username", help="The same, by login name.")
@click.option("--client", "client_id", help="A compromised client: every login and token it was issued.")
@click.option("--family", "family_id", help="One login (a refresh family, the tokens' `sid`).")
@click.option(
    "--reason", default="revoked by an operator", show_default=True, help="Recorded in the audit trail."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def sessions_revoke(
    subject: str | None,
    username: str | None,
    client_id: str | None,
    family_id: str | None,
    reason: str,
    as_json: bool,
) -> None:
    """Revoke now: refresh tokens die at once, access tokens on every instance within a second."""
    _one_of(subject=subject, username=username, client=client_id, family=family_id)
    reason = " ".join(reason.split())[:200] or "revoked by an operator"
    async with command_runtime() as runtime:
        if family_id is not None:
            family = await runtime.revocation.revoke_family(family_id, reason=reason, actor="operator")
            if family is None:
                raise LookupError(f"no live session {family_id!r} (unknown or already revoked)")
            result: dict[str, Any] = {
                "revoked": "family",
                "family": family_id,
                "subject": family.subject,
                "client_id": family.client_id,
                "families": [family_id],
            }
        else:
            subject = await _subject(runtime, subject, username)
            if subject is not None:
                done = await runtime.revocation.revoke_subject(subject, reason=reason, actor="operator")
            else:
                assert client_id is not None
                done = await runtime.revocation.revoke_client(client_id, reason=reason, actor="operator")
            result = {
                "revoked": done.kind,
                done.kind: done.value,
                "access_tokens_issued_up_to": done.at,
                "denylisted_until": done.until,
                "families": list(done.families),
            }
            if done.kind == "sub":
                result["browser_sessions"] = list(done.browser_sessions)
    if as_json:
        click.echo(json.dumps(result))
        return
    if family_id is not None:
        click.echo(
            f"revoked session {family_id} (subject {result['subject']}, client {result['client_id']}): "
            "its refresh tokens and access tokens"
        )
        return
    for line in revoked_lines(done):
        click.echo(line)


def _user_options(command: Any) -> Any:
    command = click.option("--username", help="The user's login name (instead of --subject).")(command)
    return click.option("--subject", help="The user's subject (`sub`, e.g. usr_...).")(command)


def _browser_state(row: StoredSession, now: int) -> str:
    if row.ended_at is not None:
        return f"ended ({row.ended_reason})"
    if row.expires_at <= now:
        return "expired"
    if row.idle_expires_at <= now:
        return "expired (idle)"
    return "live"


@sessions.command("browser")
@_user_options
@click.option("--all", "show_all", is_flag=True, help="Include ended and expired browser sessions.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@run
async def sessions_browser(subject: str | None, username: str | None, show_all: bool, as_json: bool) -> None:
    """List a user's browser sessions (single sign-on at /authorize): id, created, auth_time, last
    used, idle and absolute expiry, state."""
    _one_of(subject=subject, username=username)
    async with command_runtime() as runtime:
        found = await _subject(runtime, subject, username)
        assert found is not None
        now = int(time.time())
        async with runtime.db.transaction() as conn:
            rows = await runtime.browser_sessions.sessions(conn, found, live_at=None if show_all else now)
    records: list[dict[str, Any]] = [
        {
            "session": row.id,
            "subject": row.subject,
            "created_at": row.created_at,
            "auth_time": row.auth_time,
            "last_used_at": row.last_used_at,
            "idle_expires_at": row.idle_expires_at,
            "expires_at": row.expires_at,
            "ended_at": row.ended_at,
            "ended_reason": row.ended_reason,
            "state": _browser_state(row, now),
        }
        for row in rows
    ]
    if as_json:
        click.echo(json.dumps(records))
        return
    if not records:
        click.echo("no browser sessions", err=True)
    for r in records:
        click.echo(
            f"{r['session']}  subject={r['subject']}  created={iso(r['created_at'])}  "
            f"auth_time={iso(r['auth_time'])}  last_used={iso(r['last_used_at'])}  "
            f"idle_expires={iso(r['idle_expires_at'])}  expires={iso(r['expires_at'])}  {r['state']}"
        )


@sessions.command("end-browser")
@click.argument("session_id")
@click.option(
    "--reason", default="ended by an operator", show_default=True, help="Recorded in the audit trail."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def sessions_end_browser(session_id: str, reason: str, as_json: bool) -> None:
    """Sign one browser out: end browser session SESSION_ID (the next /authorize asks for the
    password) and revoke every login started through it (refresh tokens at once, access tokens
    through their denylisted `sid`)."""
    reason = " ".join(reason.split())[:200] or "ended by an operator"
    async with command_runtime() as runtime:
        async with runtime.db.transaction() as conn:
            before = await runtime.browser_sessions.by_id(conn, session_id)
        if before is None:
            raise LookupError(f"no browser session {session_id!r}")
        # An ended session still has its families revoked (a retry after a partial failure finishes).
        families = await runtime.revocation.end_browser_session(session_id, reason=reason, actor="operator")
    if families is None:
        raise LookupError(f"no browser session {session_id!r}")
    if as_json:
        click.echo(
            json.dumps({"ended": "browser_session", "session": session_id, "families": list(families)})
        )
        return
    if before.ended_at is not None:
        click.echo(f"browser session {session_id} had already ended ({before.ended_reason})")
    else:
        click.echo(f"ended browser session {session_id}")
    click.echo(f"revoked {len(families)} session(s)" + (":" if families else ""))
    for family in families:
        click.echo(f"  {family}")


@sessions.command("consents")
@_user_options
@click.option("--client", "client_id", help="Only the consents to this client.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@run
async def sessions_consents(
    subject: str | None, username: str | None, client_id: str | None, as_json: bool
) -> None:
    """List what a user consented to: client, scope, granted at (one line per client and scope)."""
    _one_of(subject=subject, username=username)
    async with command_runtime() as runtime:
        found = await _subject(runtime, subject, username)
        assert found is not None
        async with runtime.db.transaction() as conn:
            rows = await runtime.consents.consents(conn, found, client_id)
    records: list[dict[str, Any]] = [
        {"subject": r.subject, "client_id": r.client_id, "scope": r.scope, "granted_at": r.granted_at}
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(records))
        return
    if not records:
        click.echo("no consents", err=True)
    for r in records:
        click.echo(f"client={r['client_id']}  scope={r['scope']}  granted={iso(r['granted_at'])}")


@sessions.command("revoke-consent")
@_user_options
@click.option("--client", "client_id", help="Only the consents to this client (default: to every client).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def sessions_revoke_consent(
    subject: str | None, username: str | None, client_id: str | None, as_json: bool
) -> None:
    """Forget a user's consents (to --client, or to every client): the consent page shows again at
    the next sign-in. Logins already granted stay; end them with `sessions revoke`."""
    _one_of(subject=subject, username=username)
    async with command_runtime() as runtime:
        found = await _subject(runtime, subject, username)
        assert found is not None
        now = int(time.time())
        async with runtime.db.transaction() as conn:
            revoked = await runtime.consents.revoke(conn, found, client_id)
            if revoked:
                await runtime.audit.record(
                    conn,
                    at=now,
                    event="consent.revoked",
                    subject=found,
                    client_id=client_id,
                    consents=revoked,
                    actor="operator",
                )
    if as_json:
        click.echo(json.dumps({"subject": found, "client_id": client_id, "revoked": revoked}))
        return
    click.echo(
        f"revoked {revoked} consent(s) of subject {found}" + (f" to client {client_id}" if client_id else "")
    )
