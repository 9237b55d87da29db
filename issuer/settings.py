"""Settings: typed, read once from ``ISSUER_*`` environment variables, validated at start.

Every setting, its default and why that default, lives in :data:`SPECS` below; the README's
settings table is this table. Durations are integer seconds. Nothing is read at import time:
:func:`load` is called by the app factory and the CLI.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SPECS", "Settings", "SettingsError", "jwks_max_age", "load"]

SIGNING_ALGS = ("ES256", "RS256", "EdDSA")


class SettingsError(ValueError):
    """A setting is missing, malformed, or contradicts another one."""


@dataclass(frozen=True, slots=True)
class Settings:
    url: str
    database_url: str
    redis_url: str | None
    keys_dir: Path
    key_encryption_key: str | None
    hmac_key: str | None
    signing_alg: str
    access_token_ttl: int
    refresh_idle_ttl: int
    refresh_absolute_ttl: int
    refresh_grace: int
    default_audience: str
    client_cache_ttl: int
    password_hash_memory_kib: int
    password_hash_time_cost: int
    password_hash_parallelism: int
    password_hash_concurrency: int
    max_body_bytes: int
    db_pool_size: int
    retry_after: int
    key_reload_interval: int
    key_rotation_interval: int
    key_publish_ahead: int
    redis_prefix: str
    denylist_fail_open: bool
    denylist_leeway: int
    clock_skew: int
    metrics_token: str | None
    metrics_public: bool
    rate_limit_client: int
    rate_limit_password: int
    rate_limit_window: int

    def replace(self, **changes: Any) -> Settings:
        return validate(dataclasses.replace(self, **changes))


def _int(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw, 10)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None
        if not low <= value <= high:
            raise SettingsError(f"{name}={value} is out of range [{low}, {high}]")
        return value

    return parse


def _str(name: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not raw.strip():
            raise SettingsError(f"{name} is set but empty")
        return raw.strip()

    return parse


def _optional(name: str) -> Callable[[str], str | None]:
    return lambda raw: raw.strip() or None


def _bool(name: str) -> Callable[[str], bool]:
    def parse(raw: str) -> bool:
        value = raw.strip().lower()
        if value in ("true", "1", "yes", "on"):
            return True
        if value in ("false", "0", "no", "off"):
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")

    return parse


def _alg(raw: str) -> str:
    if raw not in SIGNING_ALGS:
        raise SettingsError(f"ISSUER_SIGNING_ALG={raw!r} is not one of {', '.join(SIGNING_ALGS)}")
    return raw


DAY = 86400


def _metrics_token(raw: str) -> str | None:
    token = raw.strip()
    if not token:
        return None
    if len(token) < 16 or any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise SettingsError("ISSUER_METRICS_TOKEN must be at least 16 visible ASCII characters, no spaces")
    return token


@dataclass(frozen=True, slots=True)
class Spec:
    field: str
    env: str
    default: str | None
    parse: Callable[[str], Any]
    doc: str


SPECS: tuple[Spec, ...] = (
    Spec(
        "url",
        "ISSUER_URL",
        "http://127.0.0.1:8000",
        _str("ISSUER_URL"),
        "The issuer identifier (`iss`), and the base of every URL in the metadata.",
    ),
    Spec(
        "database_url",
        "ISSUER_DATABASE_URL",
        "sqlite:///issuer.db",
        _str("ISSUER_DATABASE_URL"),
        "`sqlite:///PATH` (embedded; relative to the working directory) or `postgresql://USER@HOST:PORT/DB`.",
    ),
    Spec(
        "redis_url",
        "ISSUER_REDIS_URL",
        None,
        _optional("ISSUER_REDIS_URL"),
        "Unset: no Redis (one process; the denylist is read from the database). One server "
        "`redis://HOST:PORT/DB`, Sentinel `redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE[/DB]` or "
        "Cluster `redis+cluster://HOST:PORT[,HOST:PORT]` (see Deployment).",
    ),
    Spec(
        "keys_dir",
        "ISSUER_KEYS_DIR",
        "keys",
        lambda raw: Path(raw),
        "Where the embedded setup keeps its key-encryption and secret-hashing keys (0700/0600).",
    ),
    Spec(
        "key_encryption_key",
        "ISSUER_KEY_ENCRYPTION_KEY",
        None,
        _optional("ISSUER_KEY_ENCRYPTION_KEY"),
        "32 bytes, base64url: the AES-256-GCM key for private signing keys. Overrides `keys/kek`.",
    ),
    Spec(
        "hmac_key",
        "ISSUER_HMAC_KEY",
        None,
        _optional("ISSUER_HMAC_KEY"),
        "32 bytes, base64url: keys client-secret digests and refresh-token successors. "
        "Overrides `keys/hmac`.",
    ),
    Spec(
        "signing_alg",
        "ISSUER_SIGNING_ALG",
        "ES256",
        _alg,
        "ES256 (default: 20x cheaper to sign than RS256, accepted by every JOSE library), RS256 or EdDSA.",
    ),
    Spec(
        "access_token_ttl",
        "ISSUER_ACCESS_TOKEN_TTL",
        "300",
        _int("ISSUER_ACCESS_TOKEN_TTL", 10, DAY),
        "Access-token lifetime; a client may set a shorter or longer one of its own.",
    ),
    Spec(
        "refresh_idle_ttl",
        "ISSUER_REFRESH_IDLE_TTL",
        str(14 * DAY),
        _int("ISSUER_REFRESH_IDLE_TTL", 60, 3650 * DAY),
        "A refresh token unused for this long expires (each rotation starts a new idle period).",
    ),
    Spec(
        "refresh_absolute_ttl",
        "ISSUER_REFRESH_ABSOLUTE_TTL",
        str(90 * DAY),
        _int("ISSUER_REFRESH_ABSOLUTE_TTL", 60, 3650 * DAY),
        "A login (refresh family) ends this long after it began, however often it rotates.",
    ),
    Spec(
        "refresh_grace",
        "ISSUER_REFRESH_GRACE",
        "10",
        _int("ISSUER_REFRESH_GRACE", 0, 300),
        "Idempotent-replay window: the token just rotated, presented again this soon, returns the "
        "same successor. 0 turns it off (every replay is reuse).",
    ),
    Spec(
        "default_audience",
        "ISSUER_DEFAULT_AUDIENCE",
        None,
        _optional("ISSUER_DEFAULT_AUDIENCE"),
        "`aud` of access tokens for clients registered without `--audience`. Default: ISSUER_URL.",
    ),
    Spec(
        "client_cache_ttl",
        "ISSUER_CLIENT_CACHE_TTL",
        "5",
        _int("ISSUER_CLIENT_CACHE_TTL", 0, 300),
        "How long an instance caches a client record; a secret rotation or client change takes "
        "effect everywhere within this time. 0 disables the cache.",
    ),
    Spec(
        "password_hash_memory_kib",
        "ISSUER_PASSWORD_HASH_MEMORY_KIB",
        "19456",
        _int("ISSUER_PASSWORD_HASH_MEMORY_KIB", 8192, 4 * 1024 * 1024),
        "argon2id memory cost (OWASP minimum 19 MiB, ~40 ms a hash here).",
    ),
    Spec(
        "password_hash_time_cost",
        "ISSUER_PASSWORD_HASH_TIME_COST",
        "2",
        _int("ISSUER_PASSWORD_HASH_TIME_COST", 1, 20),
        "argon2id iterations.",
    ),
    Spec(
        "password_hash_parallelism",
        "ISSUER_PASSWORD_HASH_PARALLELISM",
        "1",
        _int("ISSUER_PASSWORD_HASH_PARALLELISM", 1, 16),
        "argon2id lanes.",
    ),
    Spec(
        "password_hash_concurrency",
        "ISSUER_PASSWORD_HASH_CONCURRENCY",
        "2",
        _int("ISSUER_PASSWORD_HASH_CONCURRENCY", 1, 64),
        "At most this many password hashes run at once per process (in worker threads, off the "
        "event loop); bounds memory to concurrency x memory cost.",
    ),
    Spec(
        "max_body_bytes",
        "ISSUER_MAX_BODY_BYTES",
        "16384",
        _int("ISSUER_MAX_BODY_BYTES", 1024, 1 << 20),
        "Largest request body accepted by the form endpoints (413 above it).",
    ),
    Spec(
        "db_pool_size",
        "ISSUER_DB_POOL_SIZE",
        "10",
        _int("ISSUER_DB_POOL_SIZE", 1, 200),
        "Database connections per process.",
    ),
    Spec(
        "retry_after",
        "ISSUER_RETRY_AFTER",
        "5",
        _int("ISSUER_RETRY_AFTER", 1, 3600),
        "`Retry-After` seconds sent with a 503 when the database or Redis is unreachable.",
    ),
    Spec(
        "key_reload_interval",
        "ISSUER_KEY_RELOAD_INTERVAL",
        "10",
        _int("ISSUER_KEY_RELOAD_INTERVAL", 1, 3600),
        "How often an instance rereads the key ring from the database (with Redis it also reloads at "
        "once on a `<prefix>keys` message).",
    ),
    Spec(
        "key_rotation_interval",
        "ISSUER_KEY_ROTATION_INTERVAL",
        str(30 * DAY),
        _int("ISSUER_KEY_ROTATION_INTERVAL", 3, 3650 * DAY),
        "How long a signing key stays active before `scripts/rotate_keys.py rotate` replaces it.",
    ),
    Spec(
        "key_publish_ahead",
        "ISSUER_KEY_PUBLISH_AHEAD",
        str(DAY),
        _int("ISSUER_KEY_PUBLISH_AHEAD", 3, 365 * DAY),
        "How long a `next` key is published in the JWKS before it may sign. The JWKS `max-age` is "
        "derived from it: min(3600, (this - ISSUER_KEY_RELOAD_INTERVAL) / 2).",
    ),
    Spec(
        "redis_prefix",
        "ISSUER_REDIS_PREFIX",
        "issuer:",
        _str("ISSUER_REDIS_PREFIX"),
        "Prefix of every Redis key and channel the issuer uses (several issuers may share one Redis). "
        "On Redis Cluster it must contain a hash tag, e.g. `{issuer}:`, so related keys share a slot.",
    ),
    Spec(
        "denylist_fail_open",
        "ISSUER_DENYLIST_FAIL_OPEN",
        "false",
        _bool("ISSUER_DENYLIST_FAIL_OPEN"),
        "RISK: `true` treats tokens as not revoked while Redis is unreachable, instead of answering "
        "503. Logged loudly at start. Leave it off unless availability matters more than revocation.",
    ),
    Spec(
        "denylist_leeway",
        "ISSUER_DENYLIST_LEEWAY",
        "60",
        _int("ISSUER_DENYLIST_LEEWAY", 0, 3600),
        "Seconds a denylist entry outlives the last token it can match (verifiers' clock skew).",
    ),
    Spec(
        "clock_skew",
        "ISSUER_CLOCK_SKEW",
        "1",
        _int("ISSUER_CLOCK_SKEW", 0, 300),
        "Seconds the instances' clocks may disagree. A log-out-everywhere or client revocation also "
        "covers tokens stamped up to this much later (a new login waits that long), and introspection "
        "accepts an `iat` up to this much ahead.",
    ),
    Spec(
        "metrics_token",
        "ISSUER_METRICS_TOKEN",
        None,
        _metrics_token,
        "Bearer token that `GET /metrics` requires (16+ visible ASCII characters). Unset and "
        "ISSUER_METRICS_PUBLIC false: `/metrics` is a 404.",
    ),
    Spec(
        "metrics_public",
        "ISSUER_METRICS_PUBLIC",
        "false",
        _bool("ISSUER_METRICS_PUBLIC"),
        "`true`: `/metrics` answers everyone (it reveals usage; only behind a network boundary).",
    ),
    Spec(
        "rate_limit_client",
        "ISSUER_RATE_LIMIT_CLIENT",
        "0",
        _int("ISSUER_RATE_LIMIT_CLIENT", 0, 10_000_000),
        "Token requests one client may make per window, all grants together (429 beyond). 0: no "
        "per-client limit (default; each limited request costs one Redis command).",
    ),
    Spec(
        "rate_limit_password",
        "ISSUER_RATE_LIMIT_PASSWORD",
        "10",
        _int("ISSUER_RATE_LIMIT_PASSWORD", 0, 1_000_000),
        "Password-grant attempts per username and client address per window, checked before the "
        "password hash (credential stuffing). 0 disables.",
    ),
    Spec(
        "rate_limit_window",
        "ISSUER_RATE_LIMIT_WINDOW",
        "60",
        _int("ISSUER_RATE_LIMIT_WINDOW", 0, DAY),
        "Length of the sliding window of both rate limits. 0 disables rate limiting.",
    ),
)


JWKS_MAX_AGE_CAP = 3600


def jwks_max_age(settings: Settings) -> int:
    """The JWKS ``Cache-Control: max-age``, derived from the key schedule (DESIGN.md, Keys).

    A verifier may hold a JWKS fetched just before an instance reloaded the ring for max-age
    more seconds, so a ``next`` key is safe to activate once it has been in the database for
    max-age + reload interval. Half of what is left of the publish-ahead window after the reload
    interval keeps that inside the window with room to spare; capped at an hour.
    """
    return min(JWKS_MAX_AGE_CAP, (settings.key_publish_ahead - settings.key_reload_interval) // 2)


def validate(settings: Settings) -> Settings:
    """Cross-field rules; raise :class:`SettingsError` naming both settings."""
    if settings.refresh_idle_ttl > settings.refresh_absolute_ttl:
        raise SettingsError(
            f"ISSUER_REFRESH_IDLE_TTL ({settings.refresh_idle_ttl}) must not exceed "
            f"ISSUER_REFRESH_ABSOLUTE_TTL ({settings.refresh_absolute_ttl})"
        )
    if settings.refresh_grace >= settings.refresh_idle_ttl:
        raise SettingsError("ISSUER_REFRESH_GRACE must be shorter than ISSUER_REFRESH_IDLE_TTL")
    if not settings.url.startswith(("http://", "https://")) or settings.url.endswith("/"):
        raise SettingsError(f"ISSUER_URL={settings.url!r} must be an http(s) URL without a trailing slash")
    if not settings.database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise SettingsError(
            "ISSUER_DATABASE_URL must start with sqlite:/// or postgresql:// "
            f"(got {settings.database_url[:20]!r})"
        )
    if settings.redis_url:
        from issuer import redis_conn

        try:
            redis_conn.check_prefix(redis_conn.parse(settings.redis_url), settings.redis_prefix)
        except ValueError as error:
            raise SettingsError(f"ISSUER_REDIS_URL: {error}") from None
    if jwks_max_age(settings) < 1:
        raise SettingsError(
            f"ISSUER_KEY_PUBLISH_AHEAD ({settings.key_publish_ahead}) must exceed ISSUER_KEY_RELOAD_INTERVAL "
            f"({settings.key_reload_interval}) by at least 2 s: the JWKS max-age plus the reload interval "
            "must fit inside the publish-ahead window"
        )
    if settings.key_publish_ahead >= settings.key_rotation_interval:
        raise SettingsError(
            f"ISSUER_KEY_PUBLISH_AHEAD ({settings.key_publish_ahead}) must be shorter than "
            f"ISSUER_KEY_ROTATION_INTERVAL ({settings.key_rotation_interval})"
        )
    return settings


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every ``ISSUER_*`` setting from ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in SPECS:
        raw = env.get(spec.env)
        if raw is None or (raw == "" and spec.default is not None):
            values[spec.field] = None if spec.default is None else spec.parse(spec.default)
        else:
            values[spec.field] = spec.parse(raw)
    if values["default_audience"] is None:
        values["default_audience"] = values["url"]
    values.update(overrides)
    return validate(Settings(**values))
