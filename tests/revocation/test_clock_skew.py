"""Instances whose clocks disagree (``ISSUER_CLOCK_SKEW``): two runtimes on one database, one
clock 3 s ahead and one 3 s behind (the test-only ``ISSUER_TEST_CLOCK_OFFSET``, :mod:`issuer.clock`).

* A token minted by the instance whose clock is ahead carries an ``iat`` in the other's future:
  introspection there still reads it (it used to say ``active: false``, PyJWT judging ``iat`` by
  its own clock with no leeway).
* Log out everywhere on the instance whose clock is behind: a token minted a moment before on
  the one ahead (``iat`` later than the revocation's own clock reading) is revoked too (it used
  to stay active: ``iat <= at`` compared two clocks).

The whole deployment under load with skewed clocks is tests/deploy/test_faults.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from issuer.clock import TEST_OFFSET_VARIABLE, wall_clock
from issuer.keys.material import KeyMaterial
from issuer.runtime import Runtime
from tests.conftest import make_settings

SKEW = 3

Skewed = Callable[[float, int], AbstractAsyncContextManager[Runtime]]


@pytest.fixture
def skewed(sqlite_url: str, tmp_path: Path, material: KeyMaterial, monkeypatch: pytest.MonkeyPatch) -> Skewed:
    @asynccontextmanager
    async def runtime(offset: float, clock_skew: int) -> AsyncIterator[Runtime]:
        monkeypatch.setenv(TEST_OFFSET_VARIABLE, str(offset))  # read once, when the Runtime is built
        live = Runtime(make_settings(sqlite_url, tmp_path, clock_skew=clock_skew), material=material)
        monkeypatch.delenv(TEST_OFFSET_VARIABLE)
        await live.start(serve=False)
        await live.keyring.ensure_active()
        try:
            yield live
        finally:
            await live.close()

    return runtime


async def _becomes_inactive(runtime: Runtime, token: str, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while (await runtime.revocation.introspect(token))["active"]:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _mint(runtime: Runtime, subject: str = "usr_alice") -> str:
    return runtime.grants.minter.mint(
        subject=subject, client_id="cli_app", audience=("https://rs.test",), scope="read", ttl=300
    ).token


def test_the_test_clock_is_time_time_unless_set() -> None:
    assert wall_clock({}) is time.time
    assert abs(wall_clock({TEST_OFFSET_VARIABLE: "-3.5"})() - (time.time() - 3.5)) < 1
    with pytest.raises(ValueError, match=TEST_OFFSET_VARIABLE):
        wall_clock({TEST_OFFSET_VARIABLE: "soon"})


async def test_a_token_from_an_instance_whose_clock_is_ahead_is_read(skewed: Skewed) -> None:
    async with skewed(SKEW, 2 * SKEW) as fast, skewed(-SKEW, 2 * SKEW) as slow:
        token = _mint(fast)
        assert (await slow.revocation.introspect(token))["active"] is True
        # beyond the allowed skew it is not ours to believe
        async with skewed(3 * SKEW, 2 * SKEW) as far_ahead:
            assert (await slow.revocation.introspect(_mint(far_ahead)))["active"] is False


async def test_log_out_everywhere_covers_tokens_of_an_instance_whose_clock_is_ahead(skewed: Skewed) -> None:
    async with skewed(SKEW, 2 * SKEW) as fast, skewed(-SKEW, 2 * SKEW) as slow:
        token = _mint(fast)  # iat: 6 s after what the slow instance's clock says now
        assert (await slow.revocation.introspect(token))["active"] is True
        fast_before = int(fast.clock())  # every token the fast instance minted so far has iat <= this
        done = await slow.revocation.revoke_subject("usr_alice", reason="test", actor="test")
        assert done.at >= fast_before  # the cut-off is the skew ahead of the slow clock
        for runtime in (fast, slow):  # without Redis another instance's copy is up to ~1 s old
            assert await _becomes_inactive(runtime, token)
        assert (await fast.revocation.introspect(_mint(fast, "usr_bob")))["active"] is True
