"""The wall clock every part of one issuer process reads: ``time.time``, unless a test skews it.

``ISSUER_TEST_CLOCK_OFFSET`` (seconds, may be negative or fractional) is a test-only knob, not a
setting: it lets a test run instances whose clocks disagree by a few seconds, as real machines'
clocks can. It is read once, when the :class:`~issuer.runtime.Runtime` is built; unset (always,
in production) the clock *is* ``time.time``, so the hot path pays nothing for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

__all__ = ["TEST_OFFSET_VARIABLE", "wall_clock"]

TEST_OFFSET_VARIABLE = "ISSUER_TEST_CLOCK_OFFSET"


def wall_clock(environ: Mapping[str, str] | None = None) -> Callable[[], float]:
    """``time.time``, or ``time.time() + offset`` when the test-only offset variable is set."""
    raw = (os.environ if environ is None else environ).get(TEST_OFFSET_VARIABLE, "")
    if not raw:
        return time.time
    try:
        offset = float(raw)
    except ValueError:
        raise ValueError(f"{TEST_OFFSET_VARIABLE}={raw!r} is not a number of seconds") from None

    def skewed() -> float:
        return time.time() + offset

    return skewed
