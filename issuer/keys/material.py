"""Key material kept outside the database: the key-encryption key and the secret-hashing key.

Production supplies both through the environment (``ISSUER_KEY_ENCRYPTION_KEY``,
``ISSUER_HMAC_KEY``: 32 bytes, base64url). The embedded default creates them on first start in
``keys/`` (directory 0700, files 0600, written atomically) and refuses files that others can
read. A database dump alone therefore never yields a private signing key, a client secret or a
refresh token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from issuer.settings import Settings, SettingsError

__all__ = ["KeyMaterial", "b64decode", "b64encode", "kek_id", "load_key_material"]

KEY_BYTES = 32


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def kek_id(kek: bytes) -> str:
    """A public fingerprint of a key-encryption key, stored beside what it wrapped."""
    return hashlib.sha256(b"issuer kek id\x00" + kek).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    kek: bytes
    hmac_key: bytes

    @property
    def kek_id(self) -> str:
        return kek_id(self.kek)


def _parse(name: str, text: str) -> bytes:
    try:
        raw = b64decode(text)
    except (binascii.Error, ValueError):
        raise SettingsError(f"{name} is not base64url") from None
    if len(raw) != KEY_BYTES:
        raise SettingsError(f"{name} must decode to {KEY_BYTES} bytes (got {len(raw)})")
    return raw


def _file_key(directory: Path, name: str, create: bool) -> bytes:
    path = directory / name
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SettingsError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        return _parse(str(path), path.read_text())
    if not create:
        raise SettingsError(f"{path} does not exist")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    tmp = directory / f".{name}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(b64encode(secrets.token_bytes(KEY_BYTES)) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)  # fails if another process created it first: theirs wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _parse(str(path), path.read_text())


def load_key_material(settings: Settings, *, create: bool = True) -> KeyMaterial:
    """The environment wins; otherwise the files in ``keys_dir``, created when missing."""
    kek = (
        _parse("ISSUER_KEY_ENCRYPTION_KEY", settings.key_encryption_key)
        if settings.key_encryption_key
        else _file_key(settings.keys_dir, "kek", create)
    )
    hmac_key = (
        _parse("ISSUER_HMAC_KEY", settings.hmac_key)
        if settings.hmac_key
        else _file_key(settings.keys_dir, "hmac", create)
    )
    return KeyMaterial(kek=kek, hmac_key=hmac_key)
