"""What every command module shares: running an async command, and one-line failures.

Expected failures (bad settings, an out-of-date schema, an unreachable database, unknown names,
policy refusals) become ``<command>: error: <one line>`` and exit status 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import click

from issuer.errors import TemporarilyUnavailable
from issuer.keys.ring import KeyRingError
from issuer.runtime import SchemaOutOfDate
from issuer.settings import SettingsError
from issuer.users import PasswordPolicyError

__all__ = ["EXPECTED", "run"]

P = ParamSpec("P")
R = TypeVar("R")

EXPECTED = (SettingsError, SchemaOutOfDate, KeyRingError, PasswordPolicyError, LookupError)


def run(coroutine: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    """Run an async command; expected failures become one line and exit status 1."""

    @wraps(coroutine)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return asyncio.run(coroutine(*args, **kwargs))  # type: ignore[arg-type]
        except TemporarilyUnavailable as error:
            raise click.ClickException(f"the database is unreachable ({error.detail})") from None
        except EXPECTED as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise click.ClickException(message) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None

    return wrapper
