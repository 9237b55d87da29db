"""The operator's key commands: ``scripts/rotate_keys.py`` and ``issuer keys``.

``status [--json]``, ``rotate [--force] [--dry-run]``, ``revoke KID [--yes]`` and ``rewrap``
(the new key-encryption key from ``ISSUER_NEW_KEY_ENCRYPTION_KEY``, ``--new-kek-file PATH`` or
``--new-kek-file -`` for stdin, or ``--generate-to PATH``; never from argv). The logic lives in
:mod:`issuer.keys.rotation`; this module parses, confirms and prints. Every failure is one line on
stderr and a non-zero exit. The key-encryption key is never created here: a script run from the
wrong directory must not wrap keys under a key the server does not have.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path

import click

from issuer.cli.support import run
from issuer.keys import rotation
from issuer.keys.material import KeyMaterial, b64decode, b64encode, load_key_material
from issuer.settings import Settings, SettingsError, load, mask_url
from issuer.store import migrations
from issuer.store.database import Database

__all__ = ["keys", "main"]

NEW_KEK_ENV = "ISSUER_NEW_KEY_ENCRYPTION_KEY"


class KeysError(click.ClickException):
    pass


async def _database(settings: Settings) -> Database:
    try:
        db = Database(settings.database_url, pool_size=2, retry_after=settings.retry_after)
    except Exception as error:  # a URL the driver refuses; its message may quote the URL
        raise SettingsError(
            f"ISSUER_DATABASE_URL={mask_url(settings.database_url)} is refused ({type(error).__name__})"
        ) from None
    try:
        async with db.transaction() as conn:
            current = await migrations.current(conn)
    except BaseException:
        await db.close()
        raise
    if current != migrations.head():
        await db.close()
        raise KeysError(
            f"the database schema is at {current or 'nothing'}, this needs {migrations.head()}: "
            "run `issuer db upgrade` (or start the server once on SQLite)"
        )
    return db


def _material(settings: Settings) -> KeyMaterial:
    return load_key_material(settings, create=False)


def _when(ts: int | None, now: int) -> str:
    if ts is None:
        return "-"
    stamp = datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    delta = ts - now
    if delta <= 0:
        return f"{stamp} (due)"
    return f"{stamp} (in {_span(delta)})"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return " ".join(parts[:2]) or "0s"


@click.group("keys", context_settings={"help_option_names": ["-h", "--help"]})
def keys() -> None:
    """Signing keys: list, rotate on schedule (safe from cron), revoke, re-wrap.

    Reads the same ISSUER_* settings as the server (database, key-encryption key, schedule).
    """


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def status_command(as_json: bool) -> None:
    """List every key: kid, algorithm, state, since when, next transition; the JWKS max-age."""
    settings = load()
    db = await _database(settings)
    try:
        report = await rotation.status(db, settings)
    finally:
        await db.close()
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    now = report["now"]
    click.echo(
        f"JWKS max-age {report['jwks_max_age']} s; signing algorithm {report['algorithm']}; "
        f"rotation every {report['rotation_interval']} s, published {report['publish_ahead']} s ahead"
    )
    for key in report["keys"]:
        since = _when(key["since"], now).replace(" (due)", "")
        nxt = f"{key['next']} at {_when(key['next_at'], now)}" if key["next"] else "-"
        click.echo(f"{key['kid']}  {key['alg']:<6} {key['state']:<8} since {since}  next: {nxt}")
    if not report["keys"]:
        click.echo("no keys yet: `rotate` (or the server's first start) creates the first one")
    for step in report["due"]:
        click.echo(f"due now: {step}")


@keys.command("rotate")
@click.option("--force", is_flag=True, help="Rotate now, even if not due (emergency; see the warning).")
@click.option("--dry-run", is_flag=True, help="Show what would be done, change nothing.")
@run
async def rotate_command(force: bool, dry_run: bool) -> None:
    """Perform whichever step is due and nothing else (safe to run from cron every few minutes)."""
    settings = load()
    material = _material(settings)
    db = await _database(settings)
    try:
        result = await rotation.rotate(db, material, settings, force=force, dry_run=dry_run)
    finally:
        await db.close()
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    verb = "would " if dry_run else ""
    for step in result.done:
        click.echo(f"{verb}{step.describe()}")
    if not result.done:
        click.echo("nothing due")
        if result.pending:
            step = result.pending[0]
            click.echo(f"next step: {step.describe()}, at {_when(step.due_at, int(time.time()))}")


class _KidCommand(click.Command):
    """A kid is a base64url thumbprint (RFC 7638) and may begin with "-": a word shaped like one
    is the KID argument, never a cluster of short options (``-Jvh...`` would otherwise be ``-h``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for i, arg in enumerate(args):
            if arg == "--":
                break
            if _DASHED_KID.fullmatch(arg):
                args = [*args[:i], *args[i + 1 :], "--", arg]
                break
        return super().parse_args(ctx, args)


_DASHED_KID = re.compile(r"-[A-Za-z0-9_-]{20,}")


@keys.command("revoke", cls=_KidCommand)
@click.argument("kid")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@run
async def revoke_command(kid: str, yes: bool) -> None:
    """Emergency: take KID out of the JWKS now, reject its tokens, sign with a fresh key.

    Every running server stops signing with KID and publishing it within about a second.
    """
    settings = load()
    material = _material(settings)
    db = await _database(settings)
    try:
        if not yes:
            click.echo(
                f"Revoke signing key {kid}? Every token it signed will be rejected; if it is the active "
                "key, another key signs from now on.",
                err=True,
            )
            answer = sys.stdin.readline().strip().lower() if not sys.stdin.isatty() else None
            if answer is None:
                answer = click.prompt("Type 'yes' to revoke", default="", show_default=False, err=True)
            if answer not in ("y", "yes"):
                raise KeysError("not confirmed; nothing revoked (use --yes to skip the question)")
        result = await rotation.revoke(db, material, settings, kid)
    finally:
        await db.close()
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"revoked {result.kid} (was {result.previous_state})")
    if result.new_active:
        click.echo(f"active {result.new_active}")


def _new_kek(new_kek_file: str | None, generate_to: Path | None) -> bytes:
    sources = [new_kek_file is not None, generate_to is not None, bool(os.environ.get(NEW_KEK_ENV))]
    if sum(sources) != 1:
        raise click.UsageError(
            f"give the new key-encryption key exactly one way: {NEW_KEK_ENV}, --new-kek-file PATH "
            "(- for stdin) or --generate-to PATH"
        )
    if generate_to is not None:
        raw = secrets.token_bytes(32)
        try:
            fd = os.open(generate_to, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            raise KeysError(f"cannot create {generate_to}: {error.strerror}") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(b64encode(raw) + "\n")
        return raw
    if new_kek_file is not None:
        text = _read_kek_file(new_kek_file)
    else:
        text = os.environ[NEW_KEK_ENV]
    if not _BASE64URL.fullmatch(text.strip()):  # b64decode alone would skip stray characters
        raise KeysError("the new key-encryption key is not base64url")
    try:
        raw = b64decode(text)
    except ValueError:
        raise KeysError("the new key-encryption key is not base64url") from None
    if len(raw) != 32:
        raise KeysError(f"the new key-encryption key must decode to 32 bytes (got {len(raw)})")
    return raw


KEK_FILE_LIMIT = 4096  # a key file is one line of 43 characters; anything this big is not one
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def _read_kek_file(name: str) -> str:
    """The text of ``--new-kek-file`` (``-``: standard input), read up to :data:`KEK_FILE_LIMIT`
    bytes: a wrong path (a log, a device, a binary) fails in one line without being read whole."""
    try:
        if name == "-":
            data = sys.stdin.buffer.readline(KEK_FILE_LIMIT + 1)
        else:
            with open(name, "rb") as handle:
                data = handle.read(KEK_FILE_LIMIT + 1)
    except OSError as error:
        raise KeysError(f"cannot read {name}: {error.strerror}") from None
    if len(data) > KEK_FILE_LIMIT:
        raise KeysError(f"{name} is larger than {KEK_FILE_LIMIT} bytes: not a key file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeysError(f"{name} is not text (binary data): not a key file") from None
    if len(text.split()) != 1:
        raise KeysError(f"{name} must hold one line: the new key, 32 bytes in base64url")
    return text


@keys.command("rewrap")
@click.option(
    "--new-kek-file", metavar="PATH", help="Read the new key (32 bytes, base64url) from PATH; - for stdin."
)
@click.option(
    "--generate-to",
    type=click.Path(path_type=Path),
    help="Generate a new key into PATH (created 0600, must not exist) and use it.",
)
@run
async def rewrap_command(new_kek_file: str | None, generate_to: Path | None) -> None:
    """Re-encrypt every private key under a new key-encryption key (never taken from argv).

    The new key comes from ISSUER_NEW_KEY_ENCRYPTION_KEY, --new-kek-file or --generate-to.
    """
    settings = load()
    material = _material(settings)
    new = _new_kek(new_kek_file, generate_to)
    db = await _database(settings)
    try:
        count = await rotation.rewrap(db, material, new)
    finally:
        await db.close()
    click.echo(f"re-wrapped {count} key(s) under the new key-encryption key")
    target = "ISSUER_KEY_ENCRYPTION_KEY" if settings.key_encryption_key else f"{settings.keys_dir / 'kek'}"
    click.echo(
        f"now install the new key where the old one was ({target}"
        + (
            f", e.g. mv {generate_to} {settings.keys_dir / 'kek'}"
            if generate_to and target.endswith("kek")
            else ""
        )
        + ") on every instance and restart them; until then running instances keep signing with the "
        "key they loaded, but cannot take up a newly activated one (pause the rotate cron job meanwhile)",
        err=True,
    )


PROG = "rotate_keys.py"


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Entry point of ``scripts/rotate_keys.py``: errors are one line ``prog: error: ...``."""

    def fail(message: str, code: int) -> int:
        click.echo(f"{prog}: error: {' '.join(message.split())}", err=True)
        return code

    try:
        keys.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.UsageError as error:
        return fail(error.format_message(), 2)
    except click.ClickException as error:
        return fail(error.message, 1)
    except SettingsError as error:
        return fail(f"bad setting: {error}", 1)
    except click.Abort:
        return fail("aborted", 1)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    return 0
