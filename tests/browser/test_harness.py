"""The browser tests fail, never skip, without Debian's chromium, and say how to install it."""

from __future__ import annotations

from typing import cast

import pytest
from playwright.sync_api import Playwright

from tests.browser import harness


def test_a_missing_chromium_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(pytest.fail.Exception) as failed:
        harness.launch(cast(Playwright, None))  # refused before Playwright is touched
    assert "apt-get install -y chromium" in str(failed.value)
