"""What every command module shares: running an async command, its runtime, and one-line failures.

Expected failures (bad settings, an out-of-date schema, an unreachable database, unknown names,
policy refusals) become ``<command>: error: <one line>`` and exit status 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import wraps
from typing import NoReturn, ParamSpec, TypeVar

import click

from issuer.errors import TemporarilyUnavailable
from issuer.keys.ring import KeyRingError
from issuer.revocation.service import SessionsRevoked
from issuer.runtime import Runtime, SchemaOutOfDate
from issuer.settings import SettingsError, load
from issuer.users import PasswordPolicyError

__all__ = [
    "EXPECTED",
    "Switched",
    "command_runtime",
    "fail",
    "iso",
    "one_line_errors",
    "revoked_lines",
    "run",
    "switch_command",
]

P = ParamSpec("P")
R = TypeVar("R")

EXPECTED = (SettingsError, SchemaOutOfDate, KeyRingError, PasswordPolicyError, LookupError)


def fail(message: str) -> NoReturn:
    """Stop the command with ``issuer: error: <message>`` and exit status 1."""
    raise click.ClickException(message)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn the expected failures raised inside into a :class:`click.ClickException` of one line."""
    try:
        yield
    except TemporarilyUnavailable as error:
        raise click.ClickException(f"the database is unreachable ({error.detail})") from None
    except EXPECTED as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise click.ClickException(message) from None


def run(coroutine: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    """Run an async command; expected failures become one line and exit status 1."""

    @wraps(coroutine)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with one_line_errors():
                return asyncio.run(coroutine(*args, **kwargs))  # type: ignore[arg-type]
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None

    return wrapper


@contextlib.asynccontextmanager
async def command_runtime(*, check_schema: bool = True) -> AsyncIterator[Runtime]:
    """The :class:`~issuer.runtime.Runtime` of one command, from the ``ISSUER_*`` settings, closed
    on the way out whatever happens inside.

    With ``check_schema`` the database must be at the migrations' head (the embedded SQLite one is
    upgraded first, as the server does). Bad settings, an out-of-date schema, an unreachable
    database and the other expected failures, in the set-up or in the body, leave as one line.
    """
    with one_line_errors():
        runtime = Runtime(load())
        try:
            if check_schema:
                await runtime.check_schema()
            yield runtime
        finally:
            await runtime.close()


def iso(ts: int | None) -> str:
    """A Unix time as ``2026-01-31T12:00:00Z`` (UTC); ``-`` for none."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def revoked_lines(done: SessionsRevoked) -> list[str]:
    """What a subject's or a client's revocation did, as printed by every command that makes one."""
    what = "subject" if done.kind == "sub" else "client"
    lines = [
        f"revoked every access token of {what} {done.value} issued up to "
        f"{iso(done.at)} (denylisted until {iso(done.until)})",
        f"revoked {len(done.families)} session(s)" + (":" if done.families else ""),
    ]
    lines.extend(f"  {family}" for family in done.families)
    if done.kind == "sub":  # a subject's revocation also signs its browsers out (single sign-on)
        lines.append(
            f"ended {len(done.browser_sessions)} browser session(s)" + (":" if done.browser_sessions else "")
        )
        lines.extend(f"  {session}" for session in done.browser_sessions)
    return lines


Switched = tuple[str, bool, SessionsRevoked | None]  # the account's name, changed?, what was revoked
Switch = Callable[[Runtime, str, bool], Awaitable[Switched]]


def switch_command(name: str, argument: str, disable: bool, doc: str, switch: Switch) -> click.Command:
    """``disable`` or ``enable`` of an account (``clients``, ``users``): one ARGUMENT names it;
    ``switch(runtime, value, disable)`` does it and returns how to name the account, whether that
    changed it, and what a disable revoked; the command prints that."""

    @click.command(name, help=doc)
    @click.argument(argument)
    @run
    async def command(**given: str) -> None:
        async with command_runtime() as runtime:
            account, changed, done = await switch(runtime, given[argument], disable)
        said = ("disabled", "was already disabled") if disable else ("enabled", "was not disabled")
        click.echo(f"{account} {said[0] if changed else said[1]}")
        for line in revoked_lines(done) if done is not None else ():
            click.echo(line)

    return command
