"""Structured logs: one JSON object per line, a request id per request, secrets redacted by construction.

Every line is ``{"ts", "level", "logger", "message", "request_id"?, "client_id"?, ...extra}``:
``ts`` is RFC 3339 UTC with milliseconds; ``request_id`` and ``client_id`` come from the request
being served (:class:`RequestContext`, a context variable set by :mod:`issuer.http.observe`);
the other members are the ``extra={...}`` fields of the call.

Redaction is structural, not a promise of the call sites:

* an ``extra`` field whose name says it may hold a credential (:data:`SENSITIVE_NAMES`: any name
  containing ``secret``, ``password``, ``token``, ``authorization``, ``cookie``, ``credential``,
  ``assertion``, ``kek`` or ``hmac``) is dropped, whatever its value;
* the message, every string value and any traceback are scrubbed of anything shaped like a
  credential (:data:`CREDENTIAL_SHAPES`: our refresh tokens ``irt_...`` and client secrets
  ``ics_...``, JWTs, ``Bearer``/``Basic`` credentials, ``password=``/``secret=``-style pairs,
  password hashes in modular-crypt form (``$argon2id$...``, ``$2b$...``, ``$scrypt$...``,
  ``pbkdf2_sha256$...``), and long hex, base64 or ``b'...'`` blobs such as key ciphertext);
* nothing in the issuer logs request bodies or headers (the access line names method, path,
  status, duration, grant and client id only);
* third-party loggers (the database drivers print SQL parameters and rows at debug level) stay
  at warning whatever ``--log-level`` says, unless the operator raises them on purpose
  (``issuer serve --log-libraries debug``); what they print is scrubbed like the rest.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import traceback
from typing import Any

__all__ = [
    "CREDENTIAL_SHAPES",
    "LIBRARY_LOGGERS",
    "SENSITIVE_NAMES",
    "JsonFormatter",
    "RequestContext",
    "current",
    "dict_config",
    "note_client",
    "note_grant",
    "scrub",
]

SENSITIVE_NAMES = (
    "secret",
    "password",
    "passwd",
    "token",
    "authorization",
    "cookie",
    "credential",
    "assertion",
    "kek",
    "hmac",
)

CREDENTIAL_SHAPES = re.compile(
    r"(?:irt|ics)_[A-Za-z0-9_-]{8,}"  # refresh tokens, client secrets
    r"|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"  # a JWS (access tokens)
    r"|(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]+"  # Authorization header values
    r"|(?i:password|passwd|secret|token|client_secret|refresh_token|access_token)"
    r"(?:['\"]?\s*[=:]\s*)['\"]?[^\s&'\",;)}]+"  # name=value pairs (forms, reprs)
    # password hashes, modular-crypt form: argon2, bcrypt, scrypt, yescrypt, sha-crypt, passlib's
    # and Django's pbkdf2 (the hash itself, not only the salt, must not leave the database)
    r"|\$(?:argon2(?:id|i|d)|2[abxy]?|scrypt|7|y|gy|5|6|pbkdf2(?:-sha\d+)?)\$[^\s'\"\\;&)}\]]+"
    r"|(?i:pbkdf2_sha\d+|scrypt|argon2)\$[^\s'\"\\;&)}\]]+"
    # blobs that look like key material or ciphertext: a printed bytes value (``b'...'``, also
    # when SQLAlchemy truncated it), 48+ hex digits (PostgreSQL prints bytea as ``\x...``), and
    # 64+ base64 characters mixing upper and lower case and digits (so that paths stay readable)
    r"|\bb'(?:[^'\\]|\\.){12,}'|\bb\"(?:[^\"\\]|\\.){12,}\""
    r"|(?:\\x|\b)[0-9A-Fa-f]{48,}\b"
    r"|(?<![A-Za-z0-9+/_=-])(?=[A-Za-z0-9+/_-]*[A-Z])(?=[A-Za-z0-9+/_-]*[a-z])(?=[A-Za-z0-9+/_-]*[0-9])"
    r"[A-Za-z0-9+/_-]{64,}={0,2}"
)

REDACTED = "[redacted]"

# Attributes every LogRecord has: not "extra" fields.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured duplicate of the message
}


class RequestContext:
    """What the logs and the metrics know about the request being served."""

    __slots__ = ("client_id", "grant", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.client_id: str | None = None
        self.grant: str | None = None


current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "issuer_request", default=None
)


def note_client(client_id: str) -> None:
    """The request's client authenticated (called by the HTTP edge; a context-variable read)."""
    context = current.get()
    if context is not None:
        context.client_id = client_id


def note_grant(grant: str) -> None:
    """The token request's grant type (one of the registry's, or ``unsupported``)."""
    context = current.get()
    if context is not None:
        context.grant = grant


def scrub(text: str) -> str:
    """``text`` with everything shaped like a credential replaced by ``[redacted]``."""
    return CREDENTIAL_SHAPES.sub(REDACTED, text)


def _sensitive(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SENSITIVE_NAMES)


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < 3 and isinstance(value, dict):
        return {str(k): _clean(v, depth + 1) for k, v in value.items() if not _sensitive(str(k))}
    if depth < 3 and isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    return scrub(repr(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for the members and the redaction."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = str(record.msg)
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(message),
        }
        context = current.get()
        if context is not None:
            entry["request_id"] = context.request_id
            if context.client_id is not None:
                entry["client_id"] = context.client_id
        for name, value in record.__dict__.items():
            if name in _RECORD_ATTRS or name.startswith("_") or name in entry or _sensitive(name):
                continue
            entry[name] = _clean(value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = scrub("".join(traceback.format_exception(*record.exc_info)).rstrip())
        elif record.exc_text:
            entry["exception"] = scrub(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, default=lambda v: scrub(repr(v)))


#: Loggers that are not the issuer's own (the drivers, the ORM, the HTTP and Redis clients,
#: migrations, the framework, the event loop). They log at warning unless ``--log-libraries`` says
#: otherwise: at debug, aiosqlite prints every statement with its parameters and SQLAlchemy every
#: row. uvicorn's ``uvicorn.error`` (start, stop, worker lifecycle) follows ``--log-level``.
LIBRARY_LOGGERS = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "alembic",
    "redis",
    "httpx",
    "httpcore",
    "litestar",
    "uvicorn",
    "asyncio",
    "multipart",
)

_LEVELS = ("debug", "info", "warning", "error")


def dict_config(level: str = "info", libraries: str | None = None) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` that sends every logger (the issuer's, uvicorn's, the
    libraries') through one JSON handler on stderr; ``issuer serve`` hands it to uvicorn too, so
    each worker process applies it.

    ``level`` is the issuer's (``issuer.*`` and ``uvicorn.error``); ``libraries`` is every other
    logger's, the root's included: by default warning, or ``level`` when that is higher.
    """
    if libraries is None:
        libraries = max("warning", level, key=_LEVELS.index)
    loggers: dict[str, Any] = {name: {"level": libraries.upper()} for name in LIBRARY_LOGGERS}
    loggers["issuer"] = {"level": level.upper()}
    loggers["uvicorn"] = {"handlers": [], "propagate": True, "level": libraries.upper()}
    loggers["uvicorn.error"] = {"handlers": [], "propagate": True, "level": level.upper()}
    loggers["uvicorn.access"] = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "issuer.observability.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": libraries.upper()},
        "loggers": loggers,
    }
