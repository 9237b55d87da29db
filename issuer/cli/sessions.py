"""Operators' revocation commands: ``issuer sessions list|revoke`` and ``issuer audit tail``.

The logic lives in :mod:`issuer.revocation.service`; this module parses and prints. Each revocation prints
what it revoked, and writes audit events (``issuer audit tail`` shows them). Every failure is one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import time
from typing import Any

import click

from issuer.cli.support import run
from issuer.revocation.service import SessionsRevoked
from issuer.runtime import Runtime
from issuer.settings import load
from issuer.users import normalize_username

__all__ = ["audit", "revoked_lines", "sessions"]

_RELATIVE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


async def _runtime() -> Runtime:
    runtime = Runtime(load())
    try:
        await runtime.check_schema()
    except BaseException:
        await runtime.close()
        raise
    return runtime


def _iso(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    """List and revoke logins (refresh-token families) and their access tokens."""


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
    runtime = await _runtime()
    try:
        subject = await _subject(runtime, subject, username)
        now = int(time.time())
        async with runtime.db.transaction() as conn:
            rows = await runtime.refresh_store.families(
                conn, subject=subject, client_id=client_id, live_at=None if show_all else now
            )
    finally:
        await runtime.close()
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
            f"created={_iso(r['created_at'])}  last_used={_iso(r['last_used_at'])}  {r['state']}"
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
    runtime = await _runtime()
    try:
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
    finally:
        await runtime.close()
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


def revoked_lines(done: SessionsRevoked) -> list[str]:
    """What a subject's or a client's revocation did, as printed by every command that makes one."""
    what = "subject" if done.kind == "sub" else "client"
    lines = [
        f"revoked every access token of {what} {done.value} issued up to "
        f"{_iso(done.at)} (denylisted until {_iso(done.until)})",
        f"revoked {len(done.families)} session(s)" + (":" if done.families else ""),
    ]
    lines.extend(f"  {family}" for family in done.families)
    return lines


def parse_since(raw: str, now: int) -> int:
    """``1700000000`` (Unix seconds), ``15m``/``2h``/``7d`` (ago), or ISO 8601 (UTC if no zone)."""
    raw = raw.strip()
    if raw.isdigit():
        return int(raw)
    relative = _RELATIVE.fullmatch(raw)
    if relative:
        return now - int(relative.group(1)) * _UNITS[relative.group(2)]
    try:
        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("use Unix seconds, 15m/2h/7d, or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


def _event_line(row: Any) -> str:
    parts = [_iso(row.at), row.event]
    for name in ("subject", "client_id", "family_id", "address"):
        value = getattr(row, name)
        if value is not None:
            parts.append(f"{name}={value}")
    detail = json.loads(row.detail or "{}")
    parts.extend(f"{k}={v}" for k, v in detail.items() if v is not None)
    return "  ".join(parts)


def _event_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at,
        "event": row.event,
        "subject": row.subject,
        "client_id": row.client_id,
        "family_id": row.family_id,
        "address": row.address,
        "detail": json.loads(row.detail or "{}"),
    }


@click.group()
def audit() -> None:
    """Read the append-only audit trail of security events."""


@audit.command("tail")
@click.option("--since", "since_raw", help="From this time: Unix seconds, 15m/2h/7d ago, or ISO 8601.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="At most this many."
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@run
async def audit_tail(since_raw: str | None, limit: int, follow: bool, as_json: bool) -> None:
    """Show the latest audit events (revocations, refresh-token reuse, key changes), oldest first."""
    since = parse_since(since_raw, int(time.time())) if since_raw is not None else None
    runtime = await _runtime()
    try:
        async with runtime.db.transaction() as conn:
            if since is None:
                rows = await runtime.audit.latest(conn, limit)
            else:
                rows = await runtime.audit.since(conn, since, limit)
            newest = await runtime.audit.latest(conn, 1)
        last = newest[-1].id if newest and not rows else 0
        while True:
            for row in rows:
                click.echo(json.dumps(_event_json(row)) if as_json else _event_line(row))
                last = max(last, row.id)
            if not follow:
                return
            await asyncio.sleep(1.0)
            async with runtime.db.transaction() as conn:
                rows = await runtime.audit.after(conn, last)
    finally:
        await runtime.close()
