#!/usr/bin/env python3
"""Signing-key operations for operators: status, rotate (safe from cron), revoke, rewrap.

    scripts/rotate_keys.py status [--json]
    scripts/rotate_keys.py rotate [--force] [--dry-run]
    scripts/rotate_keys.py revoke KID [--yes]
    scripts/rotate_keys.py rewrap [--new-kek-file PATH|-] [--generate-to PATH]

Reads the server's ISSUER_* settings. Runs with the repository's .venv when the issuer package is
not importable by the interpreter that started it. See docs/keys.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

try:
    from issuer.cli.keys import main
except ImportError:
    venv = Path(__file__).resolve().parent.parent / ".venv"
    if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        python = str(venv / "bin" / "python")
        os.execv(python, [python, __file__, *sys.argv[1:]])  # noqa: S606 (fixed path, our own argv)
    sys.exit("rotate_keys.py: error: the issuer package is not installed (run scripts/test once)")

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
