"""The app factory: one Litestar app over one :class:`~issuer.runtime.Runtime`. Nothing happens
at import time; ``create_app()`` reads settings, and the lifespan starts and stops the runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from litestar import Litestar, Router
from litestar.exceptions import HTTPException

from issuer.errors import IssuerError
from issuer.http.authorize import authorize, consent_form, consent_post, login_form, login_post
from issuer.http.cors import cors_headers
from issuer.http.direct import DIRECT, NOW, IssuerApp
from issuer.http.health import healthz, readyz
from issuer.http.logout import logout
from issuer.http.observe import metrics, observe
from issuer.http.openapi import openapi_config
from issuer.http.pages import html_error, stylesheet, template_config
from issuer.http.responses import (
    common_headers,
    error_response,
    http_exception_response,
    internal_error_response,
)
from issuer.http.revocation import introspect, revocations, revocations_post, revoke
from issuer.http.token import token
from issuer.http.userinfo import userinfo
from issuer.http.wellknown import jwks, metadata, openid_configuration
from issuer.runtime import Runtime
from issuer.settings import Settings, load

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, direct: bool = True
) -> Litestar:
    """The app; ``direct=False`` routes every request through Litestar's router, also the ones
    :mod:`issuer.http.direct` answers in front of it (what its tests compare the direct routes to)."""
    settings = settings or (runtime.settings if runtime else load())

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        live = runtime or Runtime(settings)
        app.state.runtime = live
        app.state.retry_after = settings.retry_after
        await live.start()
        try:
            yield
        finally:
            await live.close()

    # POST /token and GET /.well-known/jwks.json are answered in front of the router (issuer.http.direct)
    return IssuerApp(
        direct=DIRECT if direct else {},
        now=NOW if direct else {},
        route_handlers=[
            token,
            jwks,
            metadata,
            openid_configuration,
            userinfo,
            revoke,
            introspect,
            revocations,
            revocations_post,
            healthz,
            readyz,
            metrics,
            # browser sign-in: HTML pages, so their errors are HTML pages too (issuer.http.pages)
            Router(
                path="/",
                route_handlers=[
                    authorize,
                    login_form,
                    login_post,
                    consent_form,
                    consent_post,
                    logout,
                    stylesheet,
                ],
                exception_handlers={IssuerError: html_error},
            ),
        ],
        template_config=template_config(settings),
        lifespan=[lifespan],
        middleware=[observe],  # request id, latency metrics, access line (issuer.http.observe)
        # X-Content-Type-Options: nosniff on every response; CORS on the token-side endpoints only
        before_send=[common_headers, cors_headers],
        logging_config=None,  # logging is `issuer serve`'s (issuer.observability.logs), in every worker too
        exception_handlers={
            IssuerError: error_response,
            HTTPException: http_exception_response,
            Exception: internal_error_response,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(version("issuer")),  # GET /openapi.json, built on first request
        debug=False,
    )
