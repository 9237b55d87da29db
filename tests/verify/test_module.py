"""issuer.verify is what a resource server installs: no import-time dependency on the server's
database or web stack, and an intentional public surface."""

from __future__ import annotations

import subprocess
import sys

import issuer.verify
import issuer.verify_denylist

SERVER_STACK = (
    "sqlalchemy",
    "sqlmodel",
    "litestar",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "argon2",
    "issuer.store",
)


def test_importing_the_verifier_loads_nothing_of_the_server() -> None:
    code = (
        "import sys\n"
        "from issuer.verify import Verifier, InvalidToken\n"
        "from issuer.verify_denylist import Denylist, RedisDenylist, FeedDenylist\n"
        f"stack = {SERVER_STACK!r}\n"
        "server = ('issuer.app', 'issuer.runtime')\n"
        "print(sorted(m for m in sys.modules if m.startswith(stack) or m in server))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_litestar_guard_is_the_only_part_that_needs_litestar() -> None:
    code = "import sys, issuer.verify_litestar; print('litestar' in sys.modules, 'sqlalchemy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["True", "False"], result.stderr


def test_public_surface() -> None:
    assert issuer.verify.__all__ == ["REASONS", "SUPPORTED_ALGORITHMS", "InvalidToken", "Verifier"]
    assert issuer.verify_denylist.__all__ == [
        "KINDS",
        "Denylist",
        "FeedDenylist",
        "RedisDenylist",
        "parse_entry",
    ]
    assert {
        "malformed", "wrong_type", "wrong_algorithm", "unknown_key", "bad_signature", "wrong_issuer",
        "wrong_audience", "expired", "not_yet_valid", "revoked", "denylist_stale", "unavailable",
        "unsupported_critical",
    } == issuer.verify.REASONS  # fmt: skip
