"""A sign-in runtime (not started: the app's lifespan starts and closes it) over each database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from issuer.keys.material import KeyMaterial
from issuer.runtime import Runtime
from tests.conftest import make_settings


@pytest.fixture
async def signin_runtime(database_url: str, tmp_path: Path, material: KeyMaterial) -> AsyncIterator[Runtime]:
    runtime = Runtime(make_settings(database_url, tmp_path), material=material)
    try:
        yield runtime
    finally:
        await runtime.db.close()
