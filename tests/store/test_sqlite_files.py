"""The embedded SQLite database holds password hashes, client-secret digests and the encrypted
signing keys: the file and its ``-wal``/``-shm``/``-journal`` companions are owner-only (0600),
like ``keys/``, whatever the umask (issue 14, point 7)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from tests import support


def _modes(directory: Path) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.glob("issuer.db*")}


def test_sqlite_files_are_owner_only(tmp_path: Path, key_env: dict[str, str]) -> None:
    """A fresh embedded start (no database yet) under a permissive umask: every issuer.db* file,
    the write-ahead log and shared-memory index included, is created 0600."""
    data = tmp_path / "data"
    data.mkdir()
    env = support.issuer_env(f"sqlite:///{data / 'issuer.db'}", tmp_path / "keys", **key_env)
    previous = os.umask(0o022)  # the server inherits it: files would be 0644 by default
    try:
        with support.running_server(env, tmp_path / "server.log") as server:
            client_id, secret = support.register_client(env, grants=("client_credentials",))
            for _ in range(3):  # writes while the server runs: the WAL and its index exist now
                answer = support.post(
                    server.url + "/token", auth=(client_id, secret), data={"grant_type": "client_credentials"}
                )
                assert answer.status_code == 200
            modes = _modes(data)
    finally:
        os.umask(previous)
    assert {"issuer.db", "issuer.db-wal", "issuer.db-shm"} <= modes.keys(), modes
    assert all(mode == 0o600 for mode in modes.values()), {name: f"{m:o}" for name, m in modes.items()}


def test_existing_sqlite_files_readable_by_others_are_narrowed_at_start(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    """A database made before this rule (0644, with a -wal and -shm beside it) is made 0600 when
    the issuer starts, and the log says so."""
    path = tmp_path / "issuer.db"
    previous = os.umask(0o022)
    try:
        keep = sqlite3.connect(path)  # kept open so that the -wal and -shm stay on disk
        keep.execute("PRAGMA journal_mode=WAL")
        keep.execute("CREATE TABLE t (x)")
        keep.execute("INSERT INTO t VALUES (1)")
        keep.commit()
    finally:
        os.umask(previous)
    try:
        assert {"issuer.db", "issuer.db-wal", "issuer.db-shm"} <= _modes(tmp_path).keys()
        assert all(mode == 0o644 for mode in _modes(tmp_path).values())
        env = support.issuer_env(f"sqlite:///{path}", tmp_path / "keys", **key_env)
        with support.running_server(env, tmp_path / "server.log") as server:
            modes = _modes(tmp_path)
            log = server.log()
    finally:
        keep.close()
    assert all(mode == 0o600 for mode in modes.values()), {name: f"{m:o}" for name, m in modes.items()}
    assert "issuer.db was readable by others (mode 644): made it 0600" in log
