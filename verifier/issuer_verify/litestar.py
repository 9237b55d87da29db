"""Litestar integration of :mod:`issuer_verify.core`: a bearer-token guard with required scopes
(the ``[litestar]`` extra).

::

    auth = BearerAuth(verifier)

    @get("/notes", guards=[auth.require("notes:read")])
    async def notes(request: Request) -> list[str]:
        claims = request.state.token_claims
        ...

Errors follow RFC 6750 3.1: no or a bad token is 401 with ``WWW-Authenticate: Bearer
error="invalid_token"``; a valid token without the scope is 403 ``insufficient_scope``; a
verifier that cannot decide (JWKS unreachable, denylist copy stale) is 503 with ``Retry-After``.
Only this module imports Litestar; the rest of :mod:`issuer_verify` stays framework-free.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from issuer_verify.core import UNAVAILABLE_REASONS, InvalidToken, Verifier

__all__ = ["BearerAuth"]

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class BearerAuth:
    """Makes guards that verify the request's bearer token and require scopes."""

    def __init__(self, verifier: Verifier, *, realm: str = "api", retry_after: int = 5) -> None:
        self.verifier = verifier
        self.realm = realm
        self.retry_after = retry_after

    def _challenge(self, error: str | None = None, scope: str | None = None) -> dict[str, str]:
        value = f'Bearer realm="{_quote(self.realm)}"'
        if error:
            value += f', error="{error}"'
        if scope:
            value += f', scope="{_quote(scope)}"'
        return {"WWW-Authenticate": value}

    async def claims(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        """The verified claims of the request's token, or the HTTP error to answer."""
        header = connection.headers.get("authorization")
        if not header:
            raise NotAuthorizedException(detail="a bearer token is required", headers=self._challenge())
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException(
                detail="use the Bearer scheme", headers=self._challenge("invalid_request")
            )
        try:
            return await self.verifier.verify_async(token.strip())
        except InvalidToken as error:
            if error.reason in UNAVAILABLE_REASONS:
                raise HTTPException(
                    status_code=503,
                    detail="token verification is temporarily unavailable",
                    headers={"Retry-After": str(self.retry_after)},
                ) from None
            raise NotAuthorizedException(
                detail=f"invalid token ({error.reason})", headers=self._challenge("invalid_token")
            ) from None

    def require(self, *scopes: str) -> Guard:
        """A guard: a valid token whose ``scope`` holds every one of ``scopes``. The claims are
        left in ``request.state.token_claims``."""
        needed = frozenset(scopes)

        async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
            claims = await self.claims(connection)
            granted = claims.get("scope")
            have = frozenset(granted.split(" ")) if isinstance(granted, str) else frozenset()
            if not needed <= have:
                raise PermissionDeniedException(
                    detail="the token lacks a required scope",
                    headers=self._challenge("insufficient_scope", " ".join(sorted(needed))),
                )
            connection.state.token_claims = claims

        return guard
