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
  ``ics_...``, JWTs, ``Bearer``/``Basic`` credentials, ``password=``/``secret=``-style pairs);
* nothing in the issuer logs request bodies or headers (the access line names method, path,
  status, duration, grant and client id only).
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


def dict_config(level: str = "info") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` that sends every logger (the issuer's, uvicorn's, the
    libraries') through one JSON handler on stderr; ``issuer serve`` hands it to uvicorn too, so
    each worker process applies it."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "issuer.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
