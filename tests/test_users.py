"""Passwords: argon2id with the configured parameters, no enumeration, upgraded on login."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from issuer.runtime import Runtime
from issuer.users import PasswordPolicyError


async def test_hash_is_argon2id_with_the_configured_parameters(runtime: Runtime) -> None:
    await runtime.users.create("alice", "correct horse battery")
    async with runtime.db.transaction() as conn:
        row = await runtime.users.store.by_username(conn, "alice")
    assert row is not None
    assert row.password_hash.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert "correct horse" not in row.password_hash


async def test_authenticate(runtime: Runtime) -> None:
    subject = await runtime.users.create("alice", "correct horse battery")
    assert await runtime.users.authenticate("alice", "correct horse battery") == subject
    assert await runtime.users.authenticate("alice", "wrong password") is None
    assert await runtime.users.authenticate("nobody", "correct horse battery") is None
    assert await runtime.users.authenticate("alice\x00", "correct horse battery") is None


async def test_unknown_usernames_cost_a_full_verification(runtime: Runtime, monkeypatch) -> None:
    """No enumeration by timing: the unknown-user path runs argon2 verify exactly like a wrong password."""
    await runtime.users.create("alice", "correct horse battery")
    calls: list[str] = []
    configured = runtime.passwords.hasher

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append(str(hash).split("$")[3])  # the parameters the work was done with
            return super().verify(hash, password)

    counting = Counting(configured.time_cost, configured.memory_cost, configured.parallelism)
    monkeypatch.setattr(runtime.passwords, "hasher", counting)
    await runtime.users.authenticate("alice", "wrong password")
    await runtime.users.authenticate("nobody", "wrong password")
    await runtime.users.authenticate("", "wrong password")
    assert len(calls) == 3 and len(set(calls)) == 1, calls


async def test_old_parameters_are_upgraded_on_login(runtime: Runtime) -> None:
    await runtime.users.create("alice", "correct horse battery")
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("correct horse battery")
    async with runtime.db.transaction() as conn:
        row = await runtime.users.store.by_username(conn, "alice")
        assert row is not None
        await runtime.users.store.set_password_hash(conn, row.id, weak, 1)
    assert await runtime.users.authenticate("alice", "correct horse battery")
    async with runtime.db.transaction() as conn:
        row = await runtime.users.store.by_username(conn, "alice")
    assert row is not None and "m=8192,t=1,p=1" in row.password_hash


@pytest.mark.parametrize(
    ("username", "password"),
    [("", "long enough pw"), ("bob", "short"), ("a\x07b", "long enough pw"), ("bob", "x" * 2000)],
)
async def test_policy(runtime: Runtime, username: str, password: str) -> None:
    with pytest.raises(PasswordPolicyError):
        await runtime.users.create(username, password)


async def test_usernames_are_unique(runtime: Runtime) -> None:
    await runtime.users.create("alice", "correct horse battery")
    with pytest.raises(PasswordPolicyError, match="taken"):
        await runtime.users.create("alice", "another password")
