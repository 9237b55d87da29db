"""``issuer serve``: the token server under uvicorn, one process or ``--workers N``.

Without ``ISSUER_URL`` the issuer advertises the address it listens on
(:func:`issuer.deployment.default_url`): the command puts it in its own environment before reading
the settings, so the settings, and every worker process, which inherits the environment, agree.
"""

from __future__ import annotations

import os
from typing import Any

import click

from issuer.settings import SettingsError, load

__all__ = ["serve"]


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Without ISSUER_URL the issuer advertises http://HOST:PORT (127.0.0.1 "
    "for 0.0.0.0 and localhost, [::1] for ::), refused on a host that is not loopback: set "
    "ISSUER_URL=https://... there.",
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log verbosity of the issuer (and of uvicorn's start/stop lines).",
)
@click.option(
    "--log-libraries",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log verbosity of third-party libraries (database drivers, SQLAlchemy, Redis, HTTP "
    "clients) [default: warning, or --log-level when higher]. At debug they print SQL parameters "
    "and rows; the redaction still applies, but raise it only to diagnose.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker processes (each a full issuer); more than 1 needs PostgreSQL.",
)
def serve(host: str, port: int, log_level: str, log_libraries: str | None, workers: int) -> None:
    """Run the token server (HTTP) until interrupted; SIGTERM drains in-flight requests, then exits.

    On the embedded default (SQLite) the database is created or upgraded and a signing key
    generated on first start; on PostgreSQL run `issuer db upgrade` first. ISSUER_URL must be
    https, except on loopback (a warning) or with ISSUER_ALLOW_INSECURE_URL=true; unset, it follows
    --host and --port (http://127.0.0.1:8000 by default).

    X-Forwarded-For and X-Forwarded-Proto are believed only from the peers listed in
    ISSUER_TRUSTED_PROXIES (empty by default: the client address is the TCP peer's).

    Request heads, slow clients and open connections are bounded per process
    (ISSUER_MAX_HEADER_BYTES, ISSUER_MAX_HEADER_FIELDS, ISSUER_HEADER_TIMEOUT, ISSUER_BODY_TIMEOUT,
    ISSUER_MAX_CONNECTIONS).

    With --workers N, GET /metrics answers for the whole server (every worker's counters summed,
    prometheus_client's multiprocess mode): the workers share a fresh private directory (0700)
    made at start and removed at exit, or the operator's PROMETHEUS_MULTIPROC_DIR, used as it is
    (never emptied or removed).
    """
    import logging.config

    import uvicorn

    from issuer.app import create_app
    from issuer.deployment import check_url, check_workers, default_url
    from issuer.http.limits import LimitedHttpToolsProtocol
    from issuer.observability.logs import dict_config
    from issuer.observability.metrics import share_metrics

    url_unset = not os.environ.get("ISSUER_URL")  # empty counts as unset, as in issuer.settings
    if url_unset:  # read by load() below and, inherited, by every worker process's create_app
        os.environ["ISSUER_URL"] = default_url(host, port)
    settings = load()
    log_config = dict_config(
        log_level, log_libraries
    )  # JSON lines on stderr, secrets redacted (issuer.observability.logs)
    logging.config.dictConfig(log_config)
    try:
        insecure = check_url(settings)  # https; http on loopback (a warning); refused elsewhere
    except SettingsError as error:
        if url_unset:
            raise SettingsError(f"{error} (ISSUER_URL is unset: the default follows --host)") from None
        raise
    check_workers(settings, workers)  # one line of error for SQLite; a warning without Redis
    if insecure:  # after every refusal, so that a refusal stays one line
        logging.getLogger("issuer").warning(insecure)
    share_metrics(workers)  # before the workers start: their common directory, removed at exit
    app: Any = create_app(settings) if workers == 1 else "issuer.app:create_app"
    uvicorn.run(
        app,
        factory=workers > 1,  # each worker process builds its own app and Runtime from the environment
        workers=workers if workers > 1 else None,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config,  # applied again in each worker process
        access_log=False,
        loop="uvloop",
        # httptools with bounded heads, head and body timeouts and a connection cap (issuer.http.limits)
        http=LimitedHttpToolsProtocol.configure(settings),
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
        # Forwarding headers only from the operator's proxies (uvicorn matches addresses and CIDR
        # networks); none listed: never, whatever FORWARDED_ALLOW_IPS says.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        # uvicorn kills a worker that does not answer its ping in time, starting ones too
        timeout_worker_healthcheck=settings.worker_healthcheck_timeout,
    )
