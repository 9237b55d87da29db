"""Client records: Core statements over the ``clients`` table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.rows import every, one
from issuer.store.tables import Client

__all__ = ["ClientStore", "StoredClient"]

T = Client.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class StoredClient:
    """A ``clients`` row (secrets only as their digests)."""

    client_id: str
    name: str
    grant_types: str  # space-separated
    scope: str  # space-separated
    audience: str | None  # space-separated; None: the default
    access_token_ttl: int | None
    secret_digest: bytes
    previous_secret_digest: bytes | None
    previous_secret_expires_at: int | None
    can_introspect: bool
    created_at: int
    updated_at: int
    disabled_at: int | None
    redirect_uris: str  # space-separated
    post_logout_redirect_uris: str  # space-separated
    public: bool
    first_party: bool


class ClientStore:
    async def get(self, conn: AsyncConnection, client_id: str) -> StoredClient | None:
        return one(StoredClient, (await conn.execute(select(T).where(T.c.client_id == client_id))).first())

    async def create(self, conn: AsyncConnection, **values: Any) -> None:
        await conn.execute(insert(T).values(**values))

    async def update(self, conn: AsyncConnection, client_id: str, **values: Any) -> int:
        result = await conn.execute(update(T).where(T.c.client_id == client_id).values(**values))
        return int(result.rowcount)

    async def list(self, conn: AsyncConnection) -> list[StoredClient]:
        return every(StoredClient, await conn.execute(select(T).order_by(T.c.created_at, T.c.client_id)))

    async def public_redirect_uris(self, conn: AsyncConnection) -> tuple[str, ...]:
        """The redirect URIs of every enabled public client (space-separated, one row each): the
        CORS origins (:mod:`issuer.signin.origins`). One indexed-or-not scan of a small table."""
        query = select(T.c.redirect_uris).where(T.c.public.is_(True), T.c.disabled_at.is_(None))
        return tuple(str(row[0]) for row in await conn.execute(query))

    async def longest_access_token_ttl(
        self, conn: AsyncConnection, client_id: str | None = None
    ) -> int | None:
        """The longest ``access_token_ttl`` a client has of its own (of ``client_id`` alone when
        given); None when none has one."""
        query = select(func.max(T.c.access_token_ttl))
        if client_id is not None:
            query = query.where(T.c.client_id == client_id)
        value = (await conn.execute(query)).scalar()
        return int(value) if value is not None else None
