"""``issuer bff serve``: the backend-for-frontend (:mod:`issuer.bff`) under uvicorn.

Configured by ``BFF_*`` environment variables (see docs/bff.md), validated before it listens; a
bad one is a one-line error.
"""

from __future__ import annotations

import click

__all__ = ["bff"]


@click.group()
def bff() -> None:
    """The backend-for-frontend: signs web users in, keeps their tokens, proxies their API calls."""


@bff.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log verbosity (JSON lines on stderr, secrets redacted).",
)
def serve(host: str, port: int, log_level: str) -> None:
    """Run the BFF (HTTP) until interrupted; SIGTERM drains in-flight requests, then exits.

    BFF_URL, BFF_ISSUER_URL, BFF_CLIENT_ID and BFF_CLIENT_SECRET are required; the client is a
    confidential one at the issuer with the authorization_code and refresh_token grants and the
    redirect URI BFF_URL/bff/callback.
    """
    import logging.config

    import uvicorn

    from issuer.bff.app import create_app
    from issuer.bff.settings import load
    from issuer.observability.logs import dict_config

    settings = load()
    log_config = dict_config(log_level)
    logging.config.dictConfig(log_config)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config,
        access_log=False,
        loop="uvloop",
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
    )


@bff.command("settings")
@click.option("--markdown", is_flag=True, help="Print the settings table of docs/bff.md (Markdown).")
def settings_command(markdown: bool) -> None:
    """Print every BFF_* setting's current value (secrets as (set), URL passwords as ***), or with
    --markdown the settings table of docs/bff.md."""
    from issuer.bff.settings import load, markdown_table, shown_values

    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    for line in shown_values(load()):
        click.echo(line)
