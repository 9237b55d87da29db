"""Users (resource owners) and their passwords: argon2id, off the event loop, no enumeration.

The password grant is the cheapest way to burn a token server's CPU, so hashing runs in worker
threads behind a semaphore (``ISSUER_PASSWORD_HASH_CONCURRENCY``), which also bounds memory,
and at most ``ISSUER_PASSWORD_HASH_QUEUE`` checks may wait for a slot: one more is refused at
once (:class:`~issuer.errors.Overloaded`, 503) instead of queueing every login behind a flood.
The rate limits in front of it (:meth:`issuer.ratelimit.RateLimits.password_attempt`) refuse a
stuffing run earlier still, per address and globally.
An unknown username is verified against a dummy hash made with the same parameters, so it costs
the same time as a wrong password, and both fail with the same error text. A hash made with
older parameters is upgraded on the next successful login. A disabled user fails exactly like a
wrong password (the dummy hash is verified instead of theirs).

A login is confirmed against the stored row when its tokens are issued (:meth:`UserDirectory.confirm`):
a password change or a disable that committed while the password was being verified refuses it,
and one that commits later finds its refresh family and covers its access token's ``iat``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.errors import Overloaded
from issuer.store.database import Database
from issuer.store.users import UserStore

__all__ = ["Login", "PasswordPolicyError", "Passwords", "UserDirectory"]

USER_ID_PREFIX = "usr_"
MAX_PASSWORD_CHARS = 1024
MIN_PASSWORD_CHARS = 8


class PasswordPolicyError(ValueError):
    """A new password or username does not meet the rules."""


@dataclass(frozen=True, slots=True)
class Login:
    """A successful password check: the user's ``sub`` and the hash the password matched."""

    subject: str
    password_hash: str


class Passwords:
    def __init__(
        self, *, memory_kib: int, time_cost: int, parallelism: int, concurrency: int, queue: int | None = None
    ) -> None:
        self.hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        self.queue = queue  # checks that may wait for a slot (None: unbounded)
        self.waiting = 0
        self.verifications = 0  # argon2 verifications run (a metric)
        self.shed = 0  # checks refused because the queue was full (a metric)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return self.hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, stored: str | None, password: str) -> bool:
        """``stored`` None (no such user) still costs one full verification. Raises
        :class:`Overloaded` before any work when the queue for a slot is full."""
        if self.queue is not None and self._slots.locked() and self.waiting >= self.queue:
            self.shed += 1
            raise Overloaded(detail="password hash queue full")
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            self.verifications += 1
            return await asyncio.to_thread(self._verify, stored, password)
        finally:
            self._slots.release()

    def needs_rehash(self, stored: str) -> bool:
        return self.hasher.check_needs_rehash(stored)


def normalize_username(username: str) -> str:
    name = unicodedata.normalize("NFKC", username).strip()
    if not 1 <= len(name) <= 200 or any(unicodedata.category(ch).startswith("C") for ch in name):
        raise PasswordPolicyError("username must be 1-200 printable characters")
    return name


def check_password(password: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise PasswordPolicyError(f"password must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters")


class UserDirectory:
    def __init__(self, db: Database, passwords: Passwords, store: UserStore | None = None) -> None:
        self.db = db
        self.passwords = passwords
        self.store = store or UserStore()

    async def authenticate(self, username: str, password: str) -> str | None:
        """The user's id (``sub``) when the password matches, else None; constant work either way."""
        login = await self.login(username, password)
        return login.subject if login is not None else None

    async def login(self, username: str, password: str) -> Login | None:
        """:meth:`authenticate`, also returning the hash that matched (for :meth:`confirm`)."""
        try:
            name = normalize_username(username)
        except PasswordPolicyError:
            name = None
        row = None
        if name is not None:
            async with self.db.transaction() as conn:
                row = await self.store.by_username(conn, name)
        usable = row is not None and row.disabled_at is None and len(password) <= MAX_PASSWORD_CHARS
        ok = await self.passwords.verify(
            row.password_hash if usable and row else None, password[:MAX_PASSWORD_CHARS]
        )
        if not ok or row is None:
            return None
        password_hash = str(row.password_hash)
        if self.passwords.needs_rehash(password_hash):
            new_hash = await self.passwords.hash(password)
            async with self.db.transaction() as conn:
                current = await self.store.by_id(conn, row.id, lock=True)
                if current is None or current.password_hash != password_hash:
                    return None  # the password changed meanwhile
                await self.store.set_password_hash(conn, row.id, new_hash, int(time.time()))
            password_hash = new_hash
        return Login(str(row.id), password_hash)

    async def confirm(self, conn: AsyncConnection, login: Login) -> bool:
        """In the transaction that issues a login's tokens: the user is still enabled and still has
        the password that was checked. Locks the user's row, so that ``set_password`` and
        ``disable`` (which update it before revoking) are ordered before or after this login."""
        row = await self.store.by_id(conn, login.subject, lock=True)
        return row is not None and row.disabled_at is None and row.password_hash == login.password_hash

    async def username(self, subject: str) -> str | None:
        """The username of the enabled user ``subject`` (the userinfo endpoint's
        ``preferred_username``); None for a disabled, deleted or unknown user."""
        async with self.db.transaction() as conn:
            row = await self.store.by_id(conn, subject)
        return str(row.username) if row is not None and row.disabled_at is None else None

    async def create(self, username: str, password: str) -> str:
        name = normalize_username(username)
        check_password(password)
        user_id = USER_ID_PREFIX + secrets.token_urlsafe(16)
        password_hash = await self.passwords.hash(password)
        now = int(time.time())
        async with self.db.transaction() as conn:
            if await self.store.by_username(conn, name) is not None:
                raise PasswordPolicyError(f"username {name!r} is taken")
            await self.store.create(
                conn, id=user_id, username=name, password_hash=password_hash, created_at=now, updated_at=now
            )
        return user_id

    async def set_disabled(self, username: str, disabled: bool) -> tuple[str, bool]:
        """Disable (or enable) a user: ``(subject, changed)``. Revoking the user's logins is the
        caller's next step (:meth:`issuer.revocation.service.Revocation.revoke_subject`)."""
        name = normalize_username(username)
        now = int(time.time())
        async with self.db.transaction() as conn:
            row = await self.store.by_username(conn, name)
            if row is None:
                raise LookupError(f"no user {name!r}")
            changed = (row.disabled_at is None) == disabled
            if changed:
                await self.store.set_disabled(conn, row.id, now if disabled else None, now)
        return str(row.id), changed

    async def set_password(self, username: str, password: str) -> str:
        name = normalize_username(username)
        check_password(password)
        password_hash = await self.passwords.hash(password)
        async with self.db.transaction() as conn:
            row = await self.store.by_username(conn, name)
            if row is None:
                raise LookupError(f"no user {name!r}")
            await self.store.set_password_hash(conn, row.id, password_hash, int(time.time()))
        return str(row.id)
