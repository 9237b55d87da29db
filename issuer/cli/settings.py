"""``issuer settings``: every ``ISSUER_*`` setting with its current value, or docs/settings.md's table.

Keys and tokens show as ``(set)``, the passwords in database and Redis URLs as ``***``.
"""

from __future__ import annotations

import click

from issuer.settings import SPECS, load, mask_url

__all__ = ["settings_command"]


@click.command("settings")
@click.option("--markdown", is_flag=True, help="Print the settings table of docs/settings.md (Markdown).")
def settings_command(markdown: bool) -> None:
    """Print every ISSUER_* setting with its default (or, without --markdown, its current value).

    Keys and tokens show as (set); the passwords in database and Redis URLs as ***.
    """
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
