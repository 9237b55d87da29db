"""A small API protected by issuer access tokens: run it next to `issuer serve`.

    RS_ISSUER=http://127.0.0.1:8000 RS_AUDIENCE=http://127.0.0.1:8000 \
        .venv/bin/uvicorn --factory examples.resource_server:create_app --port 8001

Routes: ``GET /health`` (open), ``GET /notes`` (scope ``notes:read``), ``POST /notes`` (scope
``notes:write``), ``GET /me`` (any valid token). Optional revocation: ``RS_REDIS_URL`` (the
issuer's Redis; ``RS_REDIS_PREFIX``, default ``issuer:``) or ``RS_FEED_CLIENT_ID`` and
``RS_FEED_CLIENT_SECRET`` (a client registered ``--can-introspect``, polling ``/revocations``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

from litestar import Litestar, Request, get, post
from litestar.params import Body

from issuer_verify import Verifier
from issuer_verify.denylist import Denylist, FeedDenylist, RedisDenylist
from issuer_verify.litestar import BearerAuth


def denylist_from(env: Mapping[str, str], issuer: str) -> Denylist | None:
    if env.get("RS_REDIS_URL"):
        return RedisDenylist(env["RS_REDIS_URL"], prefix=env.get("RS_REDIS_PREFIX", "issuer:"))
    if env.get("RS_FEED_CLIENT_ID"):
        return FeedDenylist(
            issuer, client_id=env["RS_FEED_CLIENT_ID"], client_secret=env["RS_FEED_CLIENT_SECRET"]
        )
    return None


def create_app(env: Mapping[str, str] | None = None) -> Litestar:
    env = os.environ if env is None else env
    issuer = env["RS_ISSUER"]
    verifier = Verifier(issuer=issuer, audience=env["RS_AUDIENCE"], denylist=denylist_from(env, issuer))
    auth = BearerAuth(verifier)
    notes: list[dict[str, Any]] = []

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @get("/me", guards=[auth.require()], sync_to_thread=False)
    def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
        claims = request.state.token_claims
        return {"sub": claims["sub"], "client_id": claims["client_id"], "scope": claims.get("scope", "")}

    @get("/notes", guards=[auth.require("notes:read")], sync_to_thread=False)
    def list_notes() -> list[dict[str, Any]]:
        return notes

    @post("/notes", guards=[auth.require("notes:write")], sync_to_thread=False)
    def add_note(request: Request[Any, Any, Any], data: Annotated[dict[str, str], Body()]) -> dict[str, Any]:
        note = {"text": str(data.get("text", ""))[:1000], "author": request.state.token_claims["sub"]}
        notes.append(note)
        return note

    return Litestar(
        route_handlers=[health, me, list_notes, add_note],
        on_shutdown=[verifier.close],
        openapi_config=None,
    )
