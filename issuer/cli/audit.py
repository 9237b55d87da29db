"""``issuer audit tail``: the append-only audit trail of security events, the latest ones or followed.

Revocations, refresh-token reuse and key changes are written by the code that makes them
(:mod:`issuer.store.audit`); this module reads and prints them.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import time
from typing import Any

import click

from issuer.cli.support import command_runtime, iso, run

__all__ = ["audit", "parse_since"]

_RELATIVE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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
    parts = [iso(row.at), row.event]
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
    async with command_runtime() as runtime:
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
