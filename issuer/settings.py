"""Settings: typed, read once from ``ISSUER_*`` environment variables, validated at start.

Every setting, its default and why that default, lives in :data:`SPECS` below; the README's
settings table is this table. Durations are integer seconds. Nothing is read at import time:
:func:`load` is called by the app factory and the CLI.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SPECS", "Settings", "SettingsError", "jwks_max_age", "load", "mask_url"]

SIGNING_ALGS = ("ES256", "RS256", "EdDSA")


class SettingsError(ValueError):
    """A setting is missing, malformed, or contradicts another one."""


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_SECRET_PARAM = re.compile(r"(?i)([?&][^=&]*(?:password|passwd|secret|token)[^=&]*=)[^&]*")
MASK = "***"


def mask_url(url: str) -> str:
    """``url`` as it may be shown (``issuer settings``, error messages, logs): the password of its
    userinfo and every ``?...password=`` / ``secret`` / ``token`` query value replaced by ``***``.

    It errs on the side of hiding: the userinfo ends at the *last* ``@`` (a password with an
    unencoded ``@``, ``/`` or ``?`` is still hidden), and a value that is not ``scheme://...``
    shows only its scheme-like prefix (``postgres:/u:pw@h`` is ``postgres:***``), so an error
    about a malformed URL never echoes a character of its password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        prefix = _SCHEME.match(url)
        return f"{prefix.group()}:{MASK}" if prefix and url[prefix.end() : prefix.end() + 1] == ":" else MASK
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:{MASK}@{hostpart}" if colon else rest
    return f"{scheme}://{_SECRET_PARAM.sub(lambda m: m.group(1) + MASK, rest)}"


@dataclass(frozen=True, slots=True)
class Settings:
    url: str
    allow_insecure_url: bool
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
    max_header_bytes: int
    max_header_fields: int
    header_timeout: int
    body_timeout: int
    max_connections: int
    db_pool_size: int
    worker_healthcheck_timeout: int
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
    rate_limit_password_address: int
    rate_limit_password_global: int
    password_hash_queue: int
    trusted_proxies: tuple[str, ...]

    def replace(self, **changes: Any) -> Settings:
        return validate(dataclasses.replace(self, **changes))


# Exactly ASCII digits: int() would also take Unicode digits, a sign, '1_000' and spaces.
_INTEGER = re.compile(r"[0-9]{1,18}", re.ASCII)


def _int(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if _INTEGER.fullmatch(raw) is None:
            raise SettingsError(f"{name}={raw!r} is not an integer (ASCII digits only)")
        value = int(raw, 10)
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


def _proxies(raw: str) -> tuple[str, ...]:
    """``ISSUER_TRUSTED_PROXIES``: comma-separated IP addresses or CIDR networks (normalised)."""
    import ipaddress

    proxies = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError:
            raise SettingsError(
                f"ISSUER_TRUSTED_PROXIES: {item[:60]!r} is not an IP address or CIDR network "
                "(e.g. 10.0.0.5,10.1.0.0/16; host bits must be zero)"
            ) from None
        proxies.append(str(network.network_address) if network.num_addresses == 1 else str(network))
    return tuple(proxies)


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
        "The issuer identifier (`iss`), and the base of every URL in the metadata. `issuer serve` "
        "warns when it is `http` on loopback and refuses `http` on any other host. Unset, `issuer serve` "
        "advertises where it listens, `http://HOST:PORT` from its `--host` and `--port` (`127.0.0.1` for "
        "`0.0.0.0` and `localhost`, `[::1]` for `::`); other commands use this default.",
    ),
    Spec(
        "allow_insecure_url",
        "ISSUER_ALLOW_INSECURE_URL",
        "false",
        _bool("ISSUER_ALLOW_INSECURE_URL"),
        "RISK: `true` lets `issuer serve` start with an `http` ISSUER_URL on a non-loopback host "
        "(credentials and tokens in clear on the network; logged as a warning). For isolated test "
        "networks only.",
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
        "5",
        _int("ISSUER_REFRESH_GRACE", 0, 300),
        "Idempotent-replay window: the token just rotated, presented again this soon from the same "
        "client address, returns the same successor (another address: reuse). 0 turns it off "
        "(every replay is reuse).",
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
        "max_header_bytes",
        "ISSUER_MAX_HEADER_BYTES",
        "16384",
        _int("ISSUER_MAX_HEADER_BYTES", 1024, 1 << 20),
        "Largest request head (request line and header fields; a chunked body's trailers and framing "
        "get the same budget): 431 and the connection closed above it. 16 KiB is Node's default; our "
        "requests carry a few hundred bytes.",
    ),
    Spec(
        "max_header_fields",
        "ISSUER_MAX_HEADER_FIELDS",
        "100",
        _int("ISSUER_MAX_HEADER_FIELDS", 8, 10_000),
        "Most header fields in one request (431 beyond). 100 is Apache's `LimitRequestFields`.",
    ),
    Spec(
        "header_timeout",
        "ISSUER_HEADER_TIMEOUT",
        "10",
        _int("ISSUER_HEADER_TIMEOUT", 1, 300),
        "Seconds a client has to send a whole request head, from connecting (or from the first byte "
        "of a later request on a kept-alive connection); then the connection is closed, with a 408 "
        "if part of a head had arrived (slow-header clients).",
    ),
    Spec(
        "body_timeout",
        "ISSUER_BODY_TIMEOUT",
        "30",
        _int("ISSUER_BODY_TIMEOUT", 1, 3600),
        "Seconds a client has to send a request body once its head is in; then the connection is "
        "closed (16 KiB in 30 s is 550 bytes/s).",
    ),
    Spec(
        "max_connections",
        "ISSUER_MAX_CONNECTIONS",
        "1000",
        _int("ISSUER_MAX_CONNECTIONS", 1, 1_000_000),
        "Open HTTP connections per process; one more gets 503 with `Retry-After` and is closed before "
        "it is read. Bounds memory (each holds at most a head and 64 KiB of body) and file "
        "descriptors (keep ulimit -n above it plus the database pool).",
    ),
    Spec(
        "db_pool_size",
        "ISSUER_DB_POOL_SIZE",
        "10",
        _int("ISSUER_DB_POOL_SIZE", 1, 200),
        "Database connections per process.",
    ),
    Spec(
        "worker_healthcheck_timeout",
        "ISSUER_WORKER_HEALTHCHECK_TIMEOUT",
        "30",
        _int("ISSUER_WORKER_HEALTHCHECK_TIMEOUT", 5, 600),
        "With `issuer serve --workers N`: seconds a worker has to answer the supervisor's health-check "
        "ping before it is killed and replaced. uvicorn's 5 s kills workers that are merely slow to "
        "start on a loaded host; the ping is answered by a thread, so a busy event loop does not delay it.",
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
        "Password attempts per username and client address per window, checked before the "
        "password hash (guessing one user's password). 0 disables.",
    ),
    Spec(
        "rate_limit_window",
        "ISSUER_RATE_LIMIT_WINDOW",
        "60",
        _int("ISSUER_RATE_LIMIT_WINDOW", 0, DAY),
        "Length of the sliding window of the per-client, per-username and per-address limits. 0 "
        "disables them (not ISSUER_RATE_LIMIT_PASSWORD_GLOBAL).",
    ),
    Spec(
        "rate_limit_password_address",
        "ISSUER_RATE_LIMIT_PASSWORD_ADDRESS",
        "30",
        _int("ISSUER_RATE_LIMIT_PASSWORD_ADDRESS", 0, 1_000_000),
        "Password attempts per client address per window, whatever the username or client (429 "
        "beyond, before the password hash: credential stuffing). 0 disables.",
    ),
    Spec(
        "rate_limit_password_global",
        "ISSUER_RATE_LIMIT_PASSWORD_GLOBAL",
        "50",
        _int("ISSUER_RATE_LIMIT_PASSWORD_GLOBAL", 0, 1_000_000),
        "Password attempts per second for all addresses and instances together (shared through "
        "Redis; per process without it); beyond it 503 with `Retry-After` before the password hash. "
        "Raise it with the instances (about 25 x ISSUER_PASSWORD_HASH_CONCURRENCY each). 0 disables.",
    ),
    Spec(
        "password_hash_queue",
        "ISSUER_PASSWORD_HASH_QUEUE",
        "16",
        _int("ISSUER_PASSWORD_HASH_QUEUE", 0, 100_000),
        "Password checks that may wait for one of the ISSUER_PASSWORD_HASH_CONCURRENCY slots per "
        "process; one more is refused at once with 503 and `Retry-After` (load shed before argon2).",
    ),
    Spec(
        "trusted_proxies",
        "ISSUER_TRUSTED_PROXIES",
        "",
        _proxies,
        "Comma-separated IP addresses or CIDR networks of the reverse proxies in front of the issuer. "
        "Empty (default): no `X-Forwarded-For`/`X-Forwarded-Proto` is believed; the client address is "
        "the TCP peer's. Set: those headers are taken from these peers only (see Rate limits).",
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
            f"(got {mask_url(settings.database_url)!r})"
        )
    from issuer.store.database import async_url

    try:
        async_url(settings.database_url)
    except Exception:  # the parser's message may quote the URL: name the setting, mask the value
        raise SettingsError(
            f"ISSUER_DATABASE_URL is not a valid database URL: {mask_url(settings.database_url)}"
        ) from None
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
