"""The sign-in pages' HTML: templates, security headers, cookies and redirects, in one place.

Templates are Jinja (Litestar's template support), package data in ``issuer/signin/templates``;
``ISSUER_TEMPLATES_DIR`` replaces any of them by a file of the same name (the loader looks there
first, then at the built-ins). Autoescape is on for every template.

Every HTML answer and every redirect of the sign-in carries :func:`page_headers`: ``no-store``,
a CSP with ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY`` (clickjacking),
``Referrer-Policy: no-referrer`` (codes and request ids in URLs never leak to the next site). The
CSP's ``form-action`` allows the issuer itself and the origin the form's answer may redirect to
(Chromium checks ``form-action`` against the redirect after a form POST too).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from litestar import Request, Response, get
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig

from issuer.errors import IssuerError, Overloaded, RateLimited, TemporarilyUnavailable
from issuer.settings import Settings
from issuer.signin.codes import new_secret
from issuer.signin.redirects import LOOPBACK_HOSTS

__all__ = [
    "REQUEST_COOKIE",
    "SESSION_COOKIE",
    "clear_cookie",
    "error_page",
    "html_error",
    "page",
    "page_headers",
    "redirect",
    "set_cookie",
    "stylesheet",
    "template_config",
]

SESSION_COOKIE = "__Host-issuer-session"
REQUEST_COOKIE = "__Host-issuer-request"
BUILTIN = Path(__file__).resolve().parent.parent / "signin" / "templates"
MAX_COOKIE = 100  # our cookies are 43 characters; anything longer is not ours


def template_config(settings: Settings) -> TemplateConfig[JinjaTemplateEngine]:
    loaders: list[jinja2.BaseLoader] = []
    if settings.templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(settings.templates_dir)))
    loaders.append(jinja2.FileSystemLoader(str(BUILTIN)))
    environment = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.globals["page_title"] = settings.page_title
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def form_source(uri: str) -> str | None:
    """The CSP source expression that lets a form's answer redirect to ``uri``."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        host = parts.hostname or ""
        if parts.scheme == "http" and host in LOOPBACK_HOSTS:
            # any port (RFC 8252 7.3); CSP host sources cannot name an IPv6 literal, so [::1]
            # is allowed by scheme (the redirect URI itself was matched exactly already)
            return "http:" if host == "::1" else f"http://{host}:*"
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:" if parts.scheme else None


def page_headers(form_targets: Iterable[str] = ()) -> dict[str, str]:
    sources = ["'self'", *dict.fromkeys(s for s in map(form_source, form_targets) if s)]
    csp = (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"form-action {' '.join(sources)}; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }


def page(
    name: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    form_targets: Iterable[str] = (),
    headers: dict[str, str] | None = None,
) -> Template:
    return Template(
        template_name=name,
        context=context,
        status_code=status,
        headers={**page_headers(form_targets), **(headers or {})},
        media_type="text/html; charset=utf-8",
    )


def error_page(
    message: str, status: int = 400, *, heading: str = "Sign-in failed", headers: dict[str, str] | None = None
) -> Template:
    return page("error.html", {"heading": heading, "message": message}, status=status, headers=headers)


def redirect(location: str) -> Response[bytes]:
    """A 303 (RFC 9700 4.12: after a POST the browser must not re-send the form)."""
    return Response(b"", status_code=303, headers={**page_headers(), "Location": location})


def retry_after(error: IssuerError, settings_retry: int) -> int:
    if isinstance(error, RateLimited | Overloaded):
        return error.retry_after
    return settings_retry


def html_error(request: Request[Any, Any, Any], error: IssuerError) -> Template:
    """The sign-in routes' exception handler: the same errors as elsewhere, as an HTML page."""
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited | TemporarilyUnavailable):
        headers["Retry-After"] = str(retry_after(error, getattr(request.app.state, "retry_after", 5)))
    message = {
        429: "Too many attempts. Please wait a moment and try again.",
        503: "The service is busy right now. Please try again in a moment.",
    }.get(error.status, error.description or "The request is not valid.")
    return error_page(message, error.status, headers=headers)


def cookie(request: Request[Any, Any, Any], name: str) -> str | None:
    value = request.cookies.get(name)
    return value if value and len(value) <= MAX_COOKIE else None


def binding_of(request: Request[Any, Any, Any]) -> str:
    """The browser's binding cookie, or a new one (then the response must set it)."""
    return cookie(request, REQUEST_COOKIE) or new_secret()


def set_cookie(response: Response[Any], name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="lax")


def clear_cookie(response: Response[Any], name: str) -> None:
    response.set_cookie(name, "", max_age=0, path="/", secure=True, httponly=True, samesite="lax")


def _stylesheet_path(settings: Settings) -> Path:
    if settings.templates_dir is not None and (settings.templates_dir / "signin.css").is_file():
        return settings.templates_dir / "signin.css"
    return BUILTIN / "signin.css"


@get("/static/signin.css", include_in_schema=False)
async def stylesheet(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The pages' one stylesheet (``style-src 'self'``); replaceable like the templates."""
    path = _stylesheet_path(request.app.state.runtime.settings)
    return Response(
        path.read_bytes(),
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )
