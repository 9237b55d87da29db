"""The ``issuer`` command: serve, migrate, and register clients and users.

Every subcommand has ``--help``; bad input and unreachable services exit non-zero with a
one-line ``issuer: error: ...`` on stderr. Secrets are printed once and never taken from argv.

This module is the root group and nothing else; each command group is a module of its own
(:mod:`~issuer.cli.serve`, :mod:`~issuer.cli.db`, :mod:`~issuer.cli.clients`,
:mod:`~issuer.cli.users`, :mod:`~issuer.cli.keys`, :mod:`~issuer.cli.sessions`,
:mod:`~issuer.cli.audit`, :mod:`~issuer.cli.settings`, :mod:`~issuer.cli.bff`), sharing
:mod:`~issuer.cli.support`.
"""

from __future__ import annotations

from typing import Any

import click

from issuer.cli.audit import audit
from issuer.cli.bff import bff
from issuer.cli.clients import clients
from issuer.cli.db import db
from issuer.cli.keys import keys
from issuer.cli.serve import serve
from issuer.cli.sessions import sessions
from issuer.cli.settings import settings_command
from issuer.cli.users import users
from issuer.settings import SettingsError

__all__ = ["main"]


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

for _command in (serve, db, clients, users, settings_command, keys, sessions, audit, bff):
    main.add_command(_command)
