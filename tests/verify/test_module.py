"""issuer_verify is what a resource server installs: no import-time dependency on the server's
database or web stack (nor on the issuer package at all), and an intentional public surface."""

from __future__ import annotations

import subprocess
import sys

import issuer_verify
import issuer_verify.core
import issuer_verify.denylist
import issuer_verify.wire

SERVER_STACK = (
    "sqlalchemy",
    "sqlmodel",
    "litestar",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "argon2",
    "redis",
    "issuer",
)


def test_importing_the_verifier_loads_nothing_of_the_server() -> None:
    code = (
        "import sys\n"
        "from issuer_verify import Verifier, InvalidToken, Denylist, RedisDenylist, FeedDenylist\n"
        "import issuer_verify.wire\n"
        f"stack = {SERVER_STACK!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in stack))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_litestar_guard_is_the_only_part_that_needs_litestar() -> None:
    code = (
        "import sys, issuer_verify.litestar\n"
        "print('litestar' in sys.modules, 'sqlalchemy' in sys.modules, 'issuer' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["True", "False", "False"], result.stderr


def test_public_surface() -> None:
    assert issuer_verify.__all__ == [
        "REASONS",
        "SUPPORTED_ALGORITHMS",
        "Denylist",
        "FeedDenylist",
        "InvalidToken",
        "RedisDenylist",
        "Verifier",
        "__version__",
    ]
    assert issuer_verify.denylist.__all__ == ["Denylist", "FeedDenylist", "RedisDenylist"]
    assert issuer_verify.wire.__all__ == [
        "KINDS",
        "RESET",
        "Entry",
        "candidate_keys",
        "channel",
        "entry_key",
        "entry_key_prefixes",
        "entry_pattern",
        "is_reset",
        "loaded_marker",
        "matches",
        "parse_entry",
        "valid_value",
    ]
    assert {
        "malformed", "wrong_type", "wrong_algorithm", "unknown_key", "bad_signature", "wrong_issuer",
        "wrong_audience", "expired", "not_yet_valid", "revoked", "denylist_stale", "unavailable",
        "unsupported_critical",
    } == issuer_verify.REASONS  # fmt: skip


def test_the_server_uses_the_verifiers_wire_format() -> None:
    """One definition: the server's denylist imports the entry type and matching rule."""
    from issuer.revocation import denylist

    assert denylist.Entry is issuer_verify.wire.Entry
    assert denylist.matches is issuer_verify.wire.matches
