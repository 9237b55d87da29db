"""Running issuers: what ``issuer serve`` accepts (its URL, ``--workers N``), and why.

``ISSUER_URL`` is where clients send credentials and receive tokens, so it is ``https`` in any
real deployment (TLS at the issuer or at a proxy in front of it). :func:`check_url` flags
``http`` on a loopback host (127.0.0.0/8, ::1, ``localhost``: local development and tests) and
refuses ``http`` on any other host unless ``ISSUER_ALLOW_INSECURE_URL=true`` (flagged too).
Without ``ISSUER_URL``, ``issuer serve`` advertises the address it listens on
(:func:`default_url`): loopback for every interface (``0.0.0.0``, ``::``) and ``localhost``,
``http://HOST:PORT`` for any other ``--host``, which the same rule then judges.

Every worker process (and every host) is a full, stateless :class:`~issuer.runtime.Runtime`:
the database holds everything durable, Redis the shared fast state, so N processes behave as one
server. Two setups are refused or flagged here, before any worker starts:

* more than one worker on SQLite is refused. The embedded database is one file: every write
  (each refresh rotation) takes the file's single write lock, so extra processes add contention,
  not throughput, and each would race the others through first-start migration and key
  generation. Run PostgreSQL for more than one process.
* more than one worker without Redis works (the denylist is read from the database at most a
  second old; key changes arrive within ``ISSUER_KEY_RELOAD_INTERVAL``) but is logged as a
  warning: with Redis, revocations and key changes reach every process at once.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from issuer.settings import Settings, SettingsError

__all__ = ["check_url", "check_workers", "default_url", "is_loopback"]

log = logging.getLogger("issuer")


def check_workers(settings: Settings, workers: int) -> None:
    """Raise :class:`SettingsError` for a worker count this setup cannot serve safely."""
    if workers <= 1:
        return
    if settings.database_url.startswith("sqlite"):
        raise SettingsError(
            f"--workers {workers} needs PostgreSQL (ISSUER_DATABASE_URL=postgresql://...): the embedded "
            "SQLite database serialises every write in one file; run one worker on SQLite"
        )
    if not settings.redis_url:
        log.warning(
            "%d workers without ISSUER_REDIS_URL: revocations reach the other workers within a second "
            "and key changes within ISSUER_KEY_RELOAD_INTERVAL (set ISSUER_REDIS_URL to share them at once)",
            workers,
        )


def is_loopback(host: str) -> bool:
    """``localhost``, or an IPv4 address in 127.0.0.0/8, or ::1 (brackets allowed)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_url(host: str, port: int) -> str:
    """The issuer URL of ``issuer serve --host HOST --port PORT`` when ``ISSUER_URL`` is unset: where
    a client on this machine reaches it. Every IPv4 interface (``0.0.0.0``, or empty) and
    ``localhost`` give ``http://127.0.0.1:PORT``; every IPv6 interface (``::``) gives
    ``http://[::1]:PORT`` (asyncio listens there IPv6-only); any other host ``http://HOST:PORT``
    (an IPv6 address in brackets), which :func:`check_url` then judges like any ISSUER_URL."""
    host = host.strip().strip("[]")
    if host in ("", "0.0.0.0") or host.lower().rstrip(".") == "localhost":  # noqa: S104 (read, not bound)
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_url(settings: Settings) -> str | None:
    """Raise :class:`SettingsError` for an ``http`` ISSUER_URL on a host that is not loopback,
    unless ``ISSUER_ALLOW_INSECURE_URL``; return the warning to log for any ``http`` URL that may
    serve (``issuer serve`` logs it once every refusal has been ruled out), None for ``https``."""
    parts = urlsplit(settings.url)
    if parts.scheme == "https":
        return None
    if is_loopback(parts.hostname or ""):
        return (
            f"ISSUER_URL={settings.url} is not https: fine on loopback for development, but clients "
            "on other hosts need an https issuer"
        )
    if not settings.allow_insecure_url:
        raise SettingsError(
            f"ISSUER_URL={settings.url} is http on a host that is not loopback: clients would send "
            "credentials and receive tokens in clear; use an https URL (TLS here or at a proxy in "
            "front), or set ISSUER_ALLOW_INSECURE_URL=true on an isolated test network"
        )
    return (
        f"ISSUER_URL={settings.url} is http on a host that is not loopback (ISSUER_ALLOW_INSECURE_URL=true): "
        "credentials and tokens cross the network in clear"
    )
