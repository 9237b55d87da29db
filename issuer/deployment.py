"""Running many issuers at once: what ``issuer serve --workers N`` accepts, and why.

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

import logging

from issuer.settings import Settings, SettingsError

__all__ = ["check_workers"]

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
