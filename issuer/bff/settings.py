"""The BFF's settings: typed, read once from ``BFF_*`` environment variables, validated at start.

Declared like :mod:`issuer.settings` (one :class:`msgspec.Struct` field per variable, with its
bounds and description in a :class:`msgspec.Meta`, parsed by the same parsers, so an error is one
line that names the variable), but a separate set: the BFF is a separate process, a confidential
client of the issuer, and shares no setting with it. Nothing is read at import time.
"""

from __future__ import annotations

import binascii
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from issuer.settings import SettingsError, _directory, _metrics_token, _parser, mask_url

__all__ = ["SPECS", "BffSettings", "Upstream", "load", "markdown_table", "replace", "shown_values"]

DAY = 86400
RESERVED_PREFIX = "/bff"
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~-]+)+", re.ASCII)


class Upstream(msgspec.Struct, frozen=True):
    """One entry of ``BFF_UPSTREAMS``: requests to ``prefix/...`` go to ``url/...``."""

    prefix: str
    url: str


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(name: str, value: str) -> str:
    """An absolute http(s) URL without query, fragment or trailing slash; http on loopback only."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError(f"{name}={mask_url(value)!r} must be an http(s) URL without query or fragment")
    if value.endswith("/"):
        raise SettingsError(f"{name}={value!r} must not end with a slash")
    if parts.username or parts.password:
        raise SettingsError(f"{name} must not hold credentials")
    if parts.scheme == "http" and not _is_loopback(value):
        raise SettingsError(f"{name}={value!r} must be https (http only on loopback)")
    return value


def _upstreams(name: str) -> Callable[[str], tuple[Upstream, ...]]:
    """``PREFIX=URL`` pairs, comma-separated: ``/api=http://127.0.0.1:9000,/files=https://f.example``."""

    def parse(raw: str) -> tuple[Upstream, ...]:
        found: dict[str, Upstream] = {}
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            prefix, eq, url = (piece.strip() for piece in item.partition("="))
            if not eq or not _PREFIX.fullmatch(prefix) or prefix.endswith("/"):
                raise SettingsError(f"{name}: {item[:80]!r} is not PREFIX=URL with PREFIX like /api")
            if any(segment in (".", "..") for segment in prefix.split("/")):
                raise SettingsError(f"{name}: the prefix {prefix!r} has a dot segment")
            if prefix == RESERVED_PREFIX or prefix.startswith(RESERVED_PREFIX + "/"):
                raise SettingsError(f"{name}: the prefix {prefix!r} is the BFF's own (/bff)")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise SettingsError(f"{name}: {mask_url(url)!r} is not an http(s) URL without query")
            if parts.username or parts.password:
                raise SettingsError(f"{name}: the URL of {prefix} must not hold credentials")
            if prefix in found:
                raise SettingsError(f"{name}: the prefix {prefix} is listed twice")
            found[prefix] = Upstream(prefix=prefix, url=url.rstrip("/"))
        return tuple(found.values())

    return parse


def _key(name: str) -> Callable[[str], str | None]:
    """32 bytes, base64url (as the issuer's keys); kept as text, decoded by :func:`session_key`."""

    def parse(raw: str) -> str | None:
        text = raw.strip()
        if not text:
            return None
        try:
            decoded = _b64decode(text)
        except (binascii.Error, ValueError):
            raise SettingsError(f"{name} is not base64url") from None
        if len(decoded) != 32:
            raise SettingsError(f"{name} must decode to 32 bytes (got {len(decoded)})")
        return text

    return parse


def _b64decode(text: str) -> bytes:
    from issuer.keys.material import b64decode

    return b64decode(text)


class BffSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every ``BFF_*`` setting: ``BFF_<FIELD>``, type, default, bounds and description."""

    url: Annotated[
        str,
        Meta(
            description="The BFF's own public base URL (the browser's origin), e.g. "
            "`https://app.example`; the redirect URI registered at the issuer is this + `/bff/callback`. "
            "`https`, except on loopback.",
        ),
    ]
    issuer_url: Annotated[
        str,
        Meta(description="The issuer identifier (its `ISSUER_URL`); its metadata is read from it."),
    ]
    client_id: Annotated[
        str,
        Meta(
            description="The BFF's client id at the issuer (a confidential client with the "
            "`authorization_code` and `refresh_token` grants).",
        ),
    ]
    client_secret: Annotated[
        str,
        Meta(description="Its secret (sent with HTTP Basic, `client_secret_basic`); never logged."),
    ]
    scope: Annotated[
        str,
        Meta(description="The scopes the BFF asks for (`openid` is needed for the id_token and logout)."),
    ] = "openid"
    upstreams: Annotated[
        tuple[Upstream, ...],
        Meta(
            extra={"parse": _upstreams},
            description="Comma-separated `PREFIX=URL` pairs, e.g. `/api=http://127.0.0.1:9000`: a request "
            "to `PREFIX/rest` goes to `URL/rest` with the session's access token. Nothing else is proxied.",
        ),
    ] = ()
    static_dir: Annotated[
        Path | None,
        Meta(
            extra={"parse": _directory},
            description="A directory served at `/` (the single-page app's files; `index.html` for "
            "directories). Unset: nothing is served at `/`.",
        ),
    ] = None
    database_url: Annotated[
        str,
        Meta(
            description="The session store's durable record: `sqlite:///PATH` (embedded; one process, "
            "which keeps the sessions it read in process) or `postgresql://USER@HOST:PORT/DB` (without "
            "Redis read on every request, so that instances sharing it never answer an ended session). Its "
            "table `bff_sessions` is created when missing.",
        ),
    ] = "sqlite:///bff.db"
    redis_url: Annotated[
        str | None,
        Meta(
            description="Unset: no Redis (one instance; see BFF_DATABASE_URL). Set (`redis://HOST:PORT/DB`): "
            "sessions are cached in Redis in front of the database and in each instance's memory (kept exact "
            "by invalidations over pub/sub), and refreshes are single-flight across instances. The forms of "
            "`ISSUER_REDIS_URL` (one server, Sentinel, Cluster).",
        ),
    ] = None
    redis_prefix: Annotated[str, Meta(description="Prefix of every Redis key the BFF uses.")] = "bff:"
    session_key: Annotated[
        str | None,
        Meta(
            extra={"parse": _key},
            description="32 bytes, base64url: the AES-256-GCM key of the tokens at rest. Unset: the file "
            "`BFF_KEYS_DIR/bff_session_key`, generated on first start (only with SQLite and no Redis: "
            "instances that share sessions share this key).",
        ),
    ] = None
    keys_dir: Annotated[
        Path, Meta(description="Where the generated session key file is kept (0700/0600).")
    ] = Path("keys")
    session_idle_ttl: Annotated[
        int,
        Meta(ge=60, le=365 * DAY, description="A session unused for this long ends."),
    ] = 8 * 3600
    session_absolute_ttl: Annotated[
        int,
        Meta(
            ge=60,
            le=365 * DAY,
            description="A session ends this long after the login, however often it is used (it ends "
            "earlier when the issuer ends its refresh family).",
        ),
    ] = 7 * DAY
    login_ttl: Annotated[
        int,
        Meta(
            ge=30,
            le=3600,
            description="How long the issuer's login may take: the lifetime of the `__Host-bff-login` "
            "cookie.",
        ),
    ] = 600
    refresh_leeway: Annotated[
        int,
        Meta(
            ge=0,
            le=3600,
            description="The access token is refreshed this long before it expires (at most half its "
            "lifetime before).",
        ),
    ] = 30
    http_timeout: Annotated[
        int,
        Meta(ge=1, le=300, description="Seconds for each request to the issuer and to the upstreams."),
    ] = 10
    max_body_bytes: Annotated[
        int,
        Meta(ge=0, le=1 << 30, description="Largest request body proxied to an upstream (413 above it)."),
    ] = 1 << 20
    denylist_feed: Annotated[
        bool,
        Meta(
            description="`true`: follow the issuer's revocations by polling its `/revocations` feed with the "
            "BFF's client credentials (register the client with `--can-introspect`); a session whose tokens "
            "are revoked (its `sid`, its user, its client) ends at its next request.",
        ),
    ] = False
    denylist_redis_url: Annotated[
        str | None,
        Meta(
            description="Follow the issuer's revocations through the issuer's Redis instead (its "
            "`ISSUER_REDIS_URL`): pub/sub, no polling.",
        ),
    ] = None
    denylist_redis_prefix: Annotated[
        str, Meta(description="The issuer's `ISSUER_REDIS_PREFIX`, with BFF_DENYLIST_REDIS_URL.")
    ] = "issuer:"
    metrics_token: Annotated[
        str | None,
        Meta(
            extra={"parse": _metrics_token},
            description="Bearer token that `GET /bff/metrics` requires (16+ visible ASCII characters). "
            "Unset: `/bff/metrics` is a 404.",
        ),
    ] = None
    post_logout_redirect_uri: Annotated[
        str | None,
        Meta(
            description="Where the issuer sends the browser after `POST /bff/logout?global=1` (registered "
            "at the issuer with `--post-logout-redirect-uri`). Unset: the issuer's own signed-out page.",
        ),
    ] = None


@dataclass(frozen=True, slots=True)
class Spec:
    field: str
    env: str
    default: str | None
    required: bool
    doc: str
    parse: Callable[[str], Any]


def _specs() -> tuple[Spec, ...]:
    specs = []
    for info in msgspec.structs.fields(BffSettings):
        kind, meta = get_args(info.type)
        env = f"BFF_{info.name.upper()}"
        default = None if info.required or info.default is None else info.default
        if isinstance(default, bool):
            shown: str | None = "true" if default else "false"
        elif isinstance(default, tuple):
            shown = ",".join(f"{u.prefix}={u.url}" for u in default)
        else:
            shown = None if default is None else str(default)
        specs.append(
            Spec(
                field=info.name,
                env=env,
                default=shown,
                required=info.required,
                doc=meta.description or "",
                parse=_parser(env, kind, meta),
            )
        )
    return tuple(specs)


SPECS: tuple[Spec, ...] = _specs()
_BY_FIELD = {spec.field: spec for spec in SPECS}


SECRETS = ("client_secret", "session_key", "metrics_token")
URLS = ("database_url", "redis_url", "denylist_redis_url")


def markdown_table() -> str:
    """The settings table of docs/bff.md (``issuer bff settings --markdown``)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for spec in SPECS:
        shown = mask_url(spec.default) if spec.default and spec.field in URLS else spec.default
        default = (
            "required" if spec.required else "unset" if shown is None else f"`{shown}`" if shown else "empty"
        )
        lines.append(f"| `{spec.env}` | {default} | {spec.doc} |")
    return "\n".join(lines) + "\n"


def shown_values(settings: BffSettings) -> list[str]:
    """``BFF_X=value`` lines, secrets as ``(set)`` and URL passwords as ``***``."""
    lines = []
    for spec in SPECS:
        value = getattr(settings, spec.field)
        if isinstance(value, tuple):
            value = ",".join(f"{u.prefix}={u.url}" for u in value)
        if spec.field in SECRETS and value:
            value = "(set)"
        elif spec.field in URLS and value:
            value = mask_url(value)
        lines.append(f"{spec.env}={'' if value is None else value}")
    return lines


def validate(settings: BffSettings) -> BffSettings:
    """Cross-field rules; raise :class:`SettingsError` naming the settings."""
    _base_url("BFF_URL", settings.url)
    _base_url("BFF_ISSUER_URL", settings.issuer_url)
    if settings.session_idle_ttl > settings.session_absolute_ttl:
        raise SettingsError(
            f"BFF_SESSION_IDLE_TTL ({settings.session_idle_ttl}) must not exceed "
            f"BFF_SESSION_ABSOLUTE_TTL ({settings.session_absolute_ttl})"
        )
    if not settings.database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise SettingsError(
            "BFF_DATABASE_URL must start with sqlite:/// or postgresql:// "
            f"(got {mask_url(settings.database_url)!r})"
        )
    from issuer.store.database import async_url

    try:
        async_url(settings.database_url)
    except Exception:
        raise SettingsError(
            f"BFF_DATABASE_URL is not a valid database URL: {mask_url(settings.database_url)}"
        ) from None
    if settings.redis_url:
        from issuer import redis_conn

        try:
            redis_conn.check_prefix(redis_conn.parse(settings.redis_url), settings.redis_prefix)
        except ValueError as error:
            raise SettingsError(f"BFF_REDIS_URL: {error}") from None
    shared = settings.redis_url or not settings.database_url.startswith("sqlite:///")
    if shared and settings.session_key is None:
        raise SettingsError(
            "BFF_SESSION_KEY is required with BFF_REDIS_URL or a PostgreSQL BFF_DATABASE_URL "
            "(instances that share sessions share the key)"
        )
    if settings.denylist_feed and settings.denylist_redis_url:
        raise SettingsError("set BFF_DENYLIST_FEED or BFF_DENYLIST_REDIS_URL, not both")
    if settings.denylist_redis_url:
        from issuer import redis_conn

        try:
            redis_conn.check_prefix(
                redis_conn.parse(settings.denylist_redis_url), settings.denylist_redis_prefix
            )
        except ValueError as error:
            raise SettingsError(f"BFF_DENYLIST_REDIS_URL: {error}") from None
    if settings.post_logout_redirect_uri is not None:
        parts = urlsplit(settings.post_logout_redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise SettingsError(
                "BFF_POST_LOGOUT_REDIRECT_URI must be an absolute http(s) URL without fragment"
            )
    if "openid" not in settings.scope.split():
        raise SettingsError("BFF_SCOPE must include openid (the id_token identifies the session's user)")
    return settings


def _build(values: Mapping[str, Any]) -> BffSettings:
    missing = [spec.env for spec in SPECS if spec.required and values.get(spec.field) is None]
    if missing:
        raise SettingsError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    try:
        settings = msgspec.convert(dict(values), BffSettings)
    except msgspec.ValidationError as error:
        message, _, path = str(error).rpartition(" - at `$.")
        field = path.rstrip("`").split(".")[0].split("[")[0]
        if not message or field not in _BY_FIELD:
            raise SettingsError(str(error)) from None
        raise SettingsError(f"{_BY_FIELD[field].env}: {message}") from None
    return validate(settings)


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> BffSettings:
    """Read every ``BFF_*`` setting from ``environ`` (default ``os.environ``); ``overrides`` (field
    names, typed values) take the place of the environment's values."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in SPECS:
        raw = env.get(spec.env)
        if raw is not None and raw != "":
            values[spec.field] = spec.parse(raw)
    values.update(overrides)
    return _build(values)


def replace(settings: BffSettings, **changes: Any) -> BffSettings:
    """A copy with ``changes``, checked as :func:`load` checks."""
    return _build({**msgspec.structs.asdict(settings), **changes})
