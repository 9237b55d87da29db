"""Settings: typed, read once from ``ISSUER_*`` environment variables, validated at start.

Each setting is declared once, as a field of :class:`Settings`: its name (``ISSUER_`` and the field
name in capitals), its type, its default and why that default, its bounds and its description, in
a :class:`msgspec.Meta`. From those declarations come the environment parsing (with a one-line
error that names the variable), the per-field checks of :func:`load` and :meth:`Settings.replace`,
and :data:`SPECS`, from which ``issuer settings --markdown`` prints the settings table. Rules that
tie two settings together are in :func:`validate`. Durations are integer seconds. Nothing is read
at import time: :func:`load` is called by the app factory and the CLI.

msgspec, not pydantic-settings: the server imports it anyway (Litestar is built on it), so it costs
about a millisecond of start-up where pydantic would add its own import, and a msgspec validation
error is one line that names the field, which becomes the variable's one-line error.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec
from msgspec import Meta

__all__ = ["SPECS", "Settings", "SettingsError", "Spec", "jwks_max_age", "load", "mask_url"]

SigningAlg = Literal["ES256", "RS256", "EdDSA"]
SIGNING_ALGS: tuple[str, ...] = get_args(SigningAlg)
DAY = 86400


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


# ---------------------------------------------------------------- parsers of environment values
# Each takes the variable's name and returns the parser of its raw value; the errors name it.

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


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise SettingsError(f"{name}={raw!r} is not one of {', '.join(choices)}")
        return raw

    return parse


def _path(name: str) -> Callable[[str], Path]:
    return Path


def _directory(name: str) -> Callable[[str], Path | None]:
    """An existing directory (checked at start, so that a typo is one line, not a 500 later)."""

    def parse(raw: str) -> Path | None:
        if not raw:
            return None
        path = Path(raw)
        if not path.is_dir():
            raise SettingsError(f"{name}={raw!r} is not a directory")
        return path

    return parse


def _proxies(name: str) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated IP addresses or CIDR networks (normalised)."""

    def parse(raw: str) -> tuple[str, ...]:
        import ipaddress

        proxies = []
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            try:
                network = ipaddress.ip_network(item, strict=True)
            except ValueError:
                raise SettingsError(
                    f"{name}: {item[:60]!r} is not an IP address or CIDR network "
                    "(e.g. 10.0.0.5,10.1.0.0/16; host bits must be zero)"
                ) from None
            proxies.append(str(network.network_address) if network.num_addresses == 1 else str(network))
        return tuple(proxies)

    return parse


def _metrics_token(name: str) -> Callable[[str], str | None]:
    def parse(raw: str) -> str | None:
        token = raw.strip()
        if not token:
            return None
        if len(token) < 16 or any(not 0x21 <= ord(c) <= 0x7E for c in token):
            raise SettingsError(f"{name} must be at least 16 visible ASCII characters, no spaces")
        return token

    return parse


# ---------------------------------------------------------------- the settings


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every ``ISSUER_*`` setting, one declaration each: ``ISSUER_<FIELD>``, type, default, and a
    :class:`~msgspec.Meta` with the bounds (``ge``/``le``) and the description (the settings
    table's "meaning"). ``Meta.extra`` may hold ``parse`` (a parser factory for a value that is not
    a plain int, bool, str, path or choice) and ``default_from`` (unset: another field's value).

    Made by :func:`load`; immutable; :meth:`replace` makes a validated copy.
    """

    url: Annotated[
        str,
        Meta(
            description="The issuer identifier (`iss`), and the base of every URL in the metadata. `issuer "
            "serve` warns when it is `http` on loopback and refuses `http` on any other host. Unset, `issuer "
            "serve` advertises where it listens, `http://HOST:PORT` from its `--host` and `--port` "
            "(`127.0.0.1` for `0.0.0.0` and `localhost`, `[::1]` for `::`); other commands use this default.",
        ),
    ] = "http://127.0.0.1:8000"
    allow_insecure_url: Annotated[
        bool,
        Meta(
            description="RISK: `true` lets `issuer serve` start with an `http` ISSUER_URL on a non-loopback "
            "host (credentials and tokens in clear on the network; logged as a warning). For isolated test "
            "networks only.",
        ),
    ] = False
    database_url: Annotated[
        str,
        Meta(
            description="`sqlite:///PATH` (embedded; relative to the working directory) or "
            "`postgresql://USER@HOST:PORT/DB`.",
        ),
    ] = "sqlite:///issuer.db"
    redis_url: Annotated[
        str | None,
        Meta(
            description="Unset: no Redis (one process; the denylist is read from the database). One server "
            "`redis://HOST:PORT/DB`, Sentinel `redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE[/DB]` or "
            "Cluster `redis+cluster://HOST:PORT[,HOST:PORT]` (see Deployment).",
        ),
    ] = None
    keys_dir: Annotated[
        Path,
        Meta(
            description="Where the embedded setup keeps its key-encryption and secret-hashing keys "
            "(0700/0600).",
        ),
    ] = Path("keys")
    key_encryption_key: Annotated[
        str | None,
        Meta(
            description="32 bytes, base64url: the AES-256-GCM key for private signing keys. Overrides "
            "`keys/kek`.",
        ),
    ] = None
    hmac_key: Annotated[
        str | None,
        Meta(
            description="32 bytes, base64url: keys client-secret digests and refresh-token successors. "
            "Overrides `keys/hmac`.",
        ),
    ] = None
    signing_alg: Annotated[
        SigningAlg,
        Meta(
            description="ES256 (default: about 8x cheaper to sign than RS256, accepted by every JOSE "
            "library), RS256 or EdDSA.",
        ),
    ] = "ES256"
    access_token_ttl: Annotated[
        int,
        Meta(
            ge=10,
            le=DAY,
            description="Access-token lifetime; a client may set a shorter or longer one of its own.",
        ),
    ] = 300
    refresh_idle_ttl: Annotated[
        int,
        Meta(
            ge=60,
            le=3650 * DAY,
            description="A refresh token unused for this long expires (each rotation starts a new idle "
            "period).",
        ),
    ] = 14 * DAY
    refresh_absolute_ttl: Annotated[
        int,
        Meta(
            ge=60,
            le=3650 * DAY,
            description="A login (refresh family) ends this long after it began, however often it rotates.",
        ),
    ] = 90 * DAY
    refresh_grace: Annotated[
        int,
        Meta(
            ge=0,
            le=300,
            description="Idempotent-replay window: the token just rotated, presented again this soon from "
            "the same client address, returns the same successor (another address: reuse). 0 turns it off "
            "(every replay is reuse).",
        ),
    ] = 5
    default_audience: Annotated[
        str,
        Meta(
            extra={"default_from": "url"},
            description="`aud` of access tokens for clients registered without `--audience`. Default: "
            "ISSUER_URL.",
        ),
    ]
    client_cache_ttl: Annotated[
        int,
        Meta(
            ge=0,
            le=300,
            description="How long an instance caches a client record (and the CORS origins of public "
            "clients); a secret rotation or client change takes effect everywhere within this time. 0 "
            "disables the cache.",
        ),
    ] = 5
    password_hash_memory_kib: Annotated[
        int,
        Meta(
            ge=8192,
            le=4 * 1024 * 1024,
            description="argon2id memory cost (OWASP minimum 19 MiB, ~40 ms a hash here).",
        ),
    ] = 19_456
    password_hash_time_cost: Annotated[
        int,
        Meta(
            ge=1,
            le=20,
            description="argon2id iterations.",
        ),
    ] = 2
    password_hash_parallelism: Annotated[
        int,
        Meta(
            ge=1,
            le=16,
            description="argon2id lanes.",
        ),
    ] = 1
    password_hash_concurrency: Annotated[
        int,
        Meta(
            ge=1,
            le=64,
            description="At most this many password hashes run at once per process (in worker threads, off "
            "the event loop); bounds memory to concurrency x memory cost.",
        ),
    ] = 2
    max_body_bytes: Annotated[
        int,
        Meta(
            ge=1024,
            le=1 << 20,
            description="Largest request body accepted by the form endpoints (413 above it).",
        ),
    ] = 16_384
    max_header_bytes: Annotated[
        int,
        Meta(
            ge=1024,
            le=1 << 20,
            description="Largest request head (request line and header fields; a chunked body's trailers "
            "and framing get the same budget): 431 and the connection closed above it. 16 KiB is Node's "
            "default; our requests carry a few hundred bytes.",
        ),
    ] = 16_384
    max_header_fields: Annotated[
        int,
        Meta(
            ge=8,
            le=10_000,
            description="Most header fields in one request (431 beyond). 100 is Apache's "
            "`LimitRequestFields`.",
        ),
    ] = 100
    header_timeout: Annotated[
        int,
        Meta(
            ge=1,
            le=300,
            description="Seconds a client has to send a whole request head, from connecting (or from the "
            "first byte of a later request on a kept-alive connection); then the connection is closed, with "
            "a 408 if part of a head had arrived (slow-header clients).",
        ),
    ] = 10
    body_timeout: Annotated[
        int,
        Meta(
            ge=1,
            le=3600,
            description="Seconds a client has to send a request body once its head is in; then the "
            "connection is closed (16 KiB in 30 s is 550 bytes/s).",
        ),
    ] = 30
    max_connections: Annotated[
        int,
        Meta(
            ge=1,
            le=1_000_000,
            description="Open HTTP connections per process; one more gets 503 with `Retry-After` and is "
            "closed before it is read. Bounds memory (each holds at most a head and 64 KiB of body) and "
            "file descriptors (keep ulimit -n above it plus the database pool).",
        ),
    ] = 1000
    db_pool_size: Annotated[
        int,
        Meta(
            ge=1,
            le=200,
            description="Database connections per process.",
        ),
    ] = 10
    worker_healthcheck_timeout: Annotated[
        int,
        Meta(
            ge=5,
            le=600,
            description="With `issuer serve --workers N`: seconds a worker has to answer the supervisor's "
            "health-check ping before it is killed and replaced. uvicorn's 5 s kills workers that are "
            "merely slow to start on a loaded host; the ping is answered by a thread, so a busy event loop "
            "does not delay it.",
        ),
    ] = 30
    retry_after: Annotated[
        int,
        Meta(
            ge=1,
            le=3600,
            description="`Retry-After` seconds sent with a 503 when the database or Redis is unreachable.",
        ),
    ] = 5
    key_reload_interval: Annotated[
        int,
        Meta(
            ge=1,
            le=3600,
            description="How often an instance rereads the key ring from the database (with Redis it also "
            "reloads at once on a `<prefix>keys` message).",
        ),
    ] = 10
    key_rotation_interval: Annotated[
        int,
        Meta(
            ge=3,
            le=3650 * DAY,
            description="How long a signing key stays active before `scripts/rotate_keys.py rotate` "
            "replaces it.",
        ),
    ] = 30 * DAY
    key_publish_ahead: Annotated[
        int,
        Meta(
            ge=3,
            le=365 * DAY,
            description="How long a `next` key is published in the JWKS before it may sign. The JWKS "
            "`max-age` is derived from it: min(3600, (this - ISSUER_KEY_RELOAD_INTERVAL) / 2).",
        ),
    ] = DAY
    redis_prefix: Annotated[
        str,
        Meta(
            description="Prefix of every Redis key and channel the issuer uses (several issuers may share "
            "one Redis). On Redis Cluster it must contain a hash tag, e.g. `{issuer}:`, so related keys "
            "share a slot.",
        ),
    ] = "issuer:"
    denylist_fail_open: Annotated[
        bool,
        Meta(
            description="RISK: `true` treats tokens as not revoked while Redis is unreachable, instead of "
            "answering 503. Logged loudly at start. Leave it off unless availability matters more than "
            "revocation.",
        ),
    ] = False
    denylist_leeway: Annotated[
        int,
        Meta(
            ge=0,
            le=3600,
            description="Seconds a denylist entry outlives the last token it can match (verifiers' clock "
            "skew).",
        ),
    ] = 60
    clock_skew: Annotated[
        int,
        Meta(
            ge=0,
            le=300,
            description="Seconds the instances' clocks may disagree. A log-out-everywhere or client "
            "revocation also covers tokens stamped up to this much later (a new login waits that long), and "
            "introspection accepts an `iat` up to this much ahead.",
        ),
    ] = 1
    metrics_token: Annotated[
        str | None,
        Meta(
            extra={"parse": _metrics_token},
            description="Bearer token that `GET /metrics` requires (16+ visible ASCII characters). Unset "
            "and ISSUER_METRICS_PUBLIC false: `/metrics` is a 404.",
        ),
    ] = None
    metrics_public: Annotated[
        bool,
        Meta(
            description="`true`: `/metrics` answers everyone (it reveals usage; only behind a network "
            "boundary).",
        ),
    ] = False
    rate_limit_client: Annotated[
        int,
        Meta(
            ge=0,
            le=10_000_000,
            description="Token requests one client may make per window, all grants together (429 beyond). "
            "0: no per-client limit (default; each limited request costs one Redis command).",
        ),
    ] = 0
    rate_limit_password: Annotated[
        int,
        Meta(
            ge=0,
            le=1_000_000,
            description="Password attempts per username and client address per window, checked before the "
            "password hash (guessing one user's password). 0 disables.",
        ),
    ] = 10
    rate_limit_window: Annotated[
        int,
        Meta(
            ge=0,
            le=DAY,
            description="Length of the sliding window of the per-client, per-username and per-address "
            "limits. 0 disables them (not ISSUER_RATE_LIMIT_PASSWORD_GLOBAL).",
        ),
    ] = 60
    rate_limit_password_address: Annotated[
        int,
        Meta(
            ge=0,
            le=1_000_000,
            description="Password attempts per client address per window, whatever the username or client "
            "(429 beyond, before the password hash: credential stuffing). 0 disables.",
        ),
    ] = 30
    rate_limit_password_global: Annotated[
        int,
        Meta(
            ge=0,
            le=1_000_000,
            description="Password attempts per second for all addresses and instances together (shared "
            "through Redis; per process without it); beyond it 503 with `Retry-After` before the password "
            "hash. Raise it with the instances (about 25 x ISSUER_PASSWORD_HASH_CONCURRENCY each). 0 "
            "disables.",
        ),
    ] = 50
    password_hash_queue: Annotated[
        int,
        Meta(
            ge=0,
            le=100_000,
            description="Password checks that may wait for one of the ISSUER_PASSWORD_HASH_CONCURRENCY "
            "slots per process; one more is refused at once with 503 and `Retry-After` (load shed before "
            "argon2).",
        ),
    ] = 16
    trusted_proxies: Annotated[
        tuple[str, ...],
        Meta(
            extra={"parse": _proxies},
            description="Comma-separated IP addresses or CIDR networks of the reverse proxies in front of "
            "the issuer. Empty (default): no `X-Forwarded-For`/`X-Forwarded-Proto` is believed; the client "
            "address is the TCP peer's. Set: those headers are taken from these peers only (see Rate "
            "limits).",
        ),
    ] = ()
    authorization_code_ttl: Annotated[
        int,
        Meta(
            ge=5,
            le=600,
            description="How long an authorization code may wait for its exchange at /token (single use "
            "either way).",
        ),
    ] = 60
    authorization_request_ttl: Annotated[
        int,
        Meta(
            ge=60,
            le=DAY,
            description="How long a browser may take on the login and consent pages of one authorization "
            "request.",
        ),
    ] = 900
    browser_session_idle_ttl: Annotated[
        int,
        Meta(
            ge=60,
            le=365 * DAY,
            description="The issuer's browser session (single sign-on) ends after this long without a "
            "sign-in through it.",
        ),
    ] = DAY // 2
    browser_session_absolute_ttl: Annotated[
        int,
        Meta(
            ge=60,
            le=365 * DAY,
            description="The browser session ends this long after the password was entered, however often "
            "it is used.",
        ),
    ] = 7 * DAY
    templates_dir: Annotated[
        Path | None,
        Meta(
            extra={"parse": _directory},
            description="A directory of Jinja templates that replace the default sign-in pages "
            "(`login.html`, `consent.html`, `logout.html`, `error.html`; see Browser sign-in). Unset: the "
            "built-in pages.",
        ),
    ] = None
    page_title: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=100,
            description="The name the sign-in pages show in their title and heading.",
        ),
    ] = "issuer"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (field names, typed values), checked as :func:`load` checks."""
        return _build({**msgspec.structs.asdict(self), **changes})


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting as the environment and the settings table see it, derived from its field."""

    field: str
    env: str
    default: str | None  # as it is written in the environment; None: unset
    doc: str
    parse: Callable[[str], Any]
    default_from: str | None = None  # unset: the value of this other field


def _to_env(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _parser(name: str, kind: Any, meta: Meta) -> Callable[[str], Any]:
    extra = meta.extra or {}
    if "parse" in extra:
        parse: Callable[[str], Any] = extra["parse"](name)
        return parse
    if kind is int:
        if meta.ge is None or meta.le is None:
            raise TypeError(f"{name}: an integer setting declares its bounds (ge, le)")
        return _int(name, int(meta.ge), int(meta.le))
    if kind is bool:
        return _bool(name)
    if kind is str:
        return _optional(name) if "default_from" in extra else _str(name)
    if isinstance(kind, types.UnionType) and set(get_args(kind)) == {str, type(None)}:
        return _optional(name)
    if get_origin(kind) is Literal:
        return _choice(name, get_args(kind))
    if kind is Path:
        return _path(name)
    raise TypeError(f"{name}: no parser for {kind!r}; declare one with Meta(extra={{'parse': ...}})")


def _specs() -> tuple[Spec, ...]:
    specs = []
    for info in msgspec.structs.fields(Settings):
        kind, meta = get_args(info.type)
        env = f"ISSUER_{info.name.upper()}"
        extra = meta.extra or {}
        if info.required and "default_from" not in extra:
            raise TypeError(f"{env}: a setting has a default or a default_from")
        specs.append(
            Spec(
                field=info.name,
                env=env,
                default=None if info.required or info.default is None else _to_env(info.default),
                doc=meta.description or "",
                parse=_parser(env, kind, meta),
                default_from=extra.get("default_from"),
            )
        )
    return tuple(specs)


SPECS: tuple[Spec, ...] = _specs()
_BY_FIELD = {spec.field: spec for spec in SPECS}
_DEFAULTS = {info.name: info.default for info in msgspec.structs.fields(Settings) if not info.required}


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
    if settings.browser_session_idle_ttl > settings.browser_session_absolute_ttl:
        raise SettingsError(
            f"ISSUER_BROWSER_SESSION_IDLE_TTL ({settings.browser_session_idle_ttl}) must not exceed "
            f"ISSUER_BROWSER_SESSION_ABSOLUTE_TTL ({settings.browser_session_absolute_ttl})"
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


def _build(values: Mapping[str, Any]) -> Settings:
    """``values`` checked against the declarations (types, bounds), then against each other."""
    unknown = values.keys() - _BY_FIELD.keys()
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    try:
        settings = msgspec.convert(values, Settings)
    except msgspec.ValidationError as error:
        message, _, path = str(error).rpartition(" - at `$.")
        field = path.rstrip("`")
        if not message or field not in _BY_FIELD:
            raise SettingsError(str(error)) from None
        raise SettingsError(f"{_BY_FIELD[field].env}: {message}") from None  # no value: it may be a secret
    return validate(settings)


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every ``ISSUER_*`` setting from ``environ`` (default ``os.environ``); ``overrides``
    (field names, typed values) take the place of the environment's values and are checked alike."""
    env = os.environ if environ is None else environ
    values = dict(_DEFAULTS)
    for spec in SPECS:
        raw = env.get(spec.env)
        if raw is not None and not (raw == "" and spec.default is not None):  # empty: the default
            values[spec.field] = spec.parse(raw)
    values.update(overrides)
    for spec in SPECS:
        if spec.default_from is not None and values.get(spec.field) is None:
            values[spec.field] = values[spec.default_from]
    return _build(values)
