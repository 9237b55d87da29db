"""``issuer users``: the resource owners of the password grant: create, set a password, disable, enable.

A password is read from standard input (or prompted for on a TTY), never taken from argv.
"""

from __future__ import annotations

import getpass
import sys

import click

from issuer.cli.support import Switched, command_runtime, fail, revoked_lines, run, switch_command
from issuer.runtime import Runtime

__all__ = ["users"]


@click.group()
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
    async with command_runtime() as runtime:
        user_id = await runtime.users.create(username, password)
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
    async with command_runtime() as runtime:
        user_id = await runtime.users.set_password(username, password)
        click.echo(f"password of {username} ({user_id}) replaced")
        if keep_sessions:
            click.echo("sessions kept (--keep-sessions): existing logins and access tokens stay valid")
            return
        done = await runtime.revocation.revoke_subject(user_id, reason="password changed", actor="operator")
    for line in revoked_lines(done):
        click.echo(line)


async def _set_disabled(runtime: Runtime, username: str, disable: bool) -> Switched:
    user_id, changed = await runtime.users.set_disabled(username, disable)
    # A disable revokes even when the user already was: running it again repeats the revocation.
    done = None
    if disable:
        done = await runtime.revocation.revoke_subject(user_id, reason="user disabled", actor="operator")
    return f"user {username} ({user_id})", changed, done


_DISABLE = """Disable USERNAME: no new logins, every login and access token revoked now (run it again to
    repeat the revocation)."""
_ENABLE = "Enable USERNAME again: it may log in; tokens revoked while it was disabled stay revoked."
users.add_command(switch_command("disable", "username", True, _DISABLE, _set_disabled))
users.add_command(switch_command("enable", "username", False, _ENABLE, _set_disabled))
