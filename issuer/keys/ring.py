"""The key ring: signing keys, encrypted at rest, one signer and many verifiers.

States (DESIGN.md, Keys): ``next`` (published in the JWKS, not yet signing), ``active``
(signing; exactly one, enforced by a unique partial index), ``retired`` (published until its
last token expires), then deleted. ``kid`` is the RFC 7638 thumbprint of the public JWK. The
private part is PKCS#8 DER sealed with AES-256-GCM under the key-encryption key, the ``kid``
and algorithm bound in as associated data, so a ciphertext cannot be moved to another row.

:class:`KeyRing` is the in-process view: it reloads from the database, keeps the active key's
decrypted signer and the rendered JWKS (RFC 7517: public members only). A kid in
:attr:`KeyRing.denied_kids` (the denylist's ``kid`` entries, :attr:`issuer.revocation.denylist.Denylist.kids`)
counts as revoked whatever its row says: out of the JWKS, never the signer. ``issuer keys revoke``
denylists the kid before it rewrites the ring, so an instance that sees the entry first stops
signing with the key and publishing it without waiting for the row.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms
from jwt.utils import base64url_encode
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.errors import TemporarilyUnavailable
from issuer.keys.material import KeyMaterial
from issuer.keys.plan import STATES
from issuer.store.database import Database
from issuer.store.keys import KeyStore

__all__ = [
    "PRIVATE_MEMBERS",
    "KeyRing",
    "KeyRingError",
    "NewKey",
    "Signer",
    "generate_key",
    "seal",
    "store_key",
    "thumbprint",
    "unseal",
]

PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class KeyRingError(RuntimeError):
    """The key ring cannot be used (no active key, wrong key-encryption key, corrupt row)."""


def _generate_private(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyRingError(f"unsupported signing algorithm {alg!r}")


# RFC 7638 section 3.2: the members a thumbprint covers, per key type (OKP: RFC 8037 section 2).
THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "oct": ("k", "kty"),
}


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of ``jwk``, base64url without padding.

    RFC 7638 section 3: SHA-256 over the UTF-8 JSON of the required members only, in
    lexicographic order, without whitespace (section 3.3). The members are base64url strings
    and names, so ``json.dumps`` with sorted keys and no separator spaces is that canonical form.
    """
    members = THUMBPRINT_MEMBERS.get(jwk.get("kty", ""))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise ValueError(f"not a complete public JWK of a known key type: {sorted(jwk)}")
    canonical = json.dumps({m: jwk[m] for m in members}, sort_keys=True, separators=(",", ":"))
    return base64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest()).decode("ascii")


def public_jwk(private_key: PrivateKey, alg: str) -> dict[str, Any]:
    public = private_key.public_key()
    algorithm: Any = {"ES256": ECAlgorithm, "RS256": RSAAlgorithm, "EdDSA": OKPAlgorithm}[alg]
    jwk: dict[str, Any] = dict(algorithm.to_jwk(public, as_dict=True))
    for member in PRIVATE_MEMBERS:
        jwk.pop(member, None)
    jwk["kid"] = thumbprint(jwk)
    jwk["alg"] = alg
    jwk["use"] = "sig"
    return jwk


def _aad(kid: str, alg: str) -> bytes:
    return f"issuer signing key\x00{kid}\x00{alg}".encode()


def seal(material: KeyMaterial, private_key: PrivateKey, kid: str, alg: str) -> bytes:
    der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    nonce = os.urandom(12)
    return nonce + AESGCM(material.kek).encrypt(nonce, der, _aad(kid, alg))


def unseal(kek: bytes, sealed: bytes, kid: str, alg: str) -> PrivateKey:
    try:
        der = AESGCM(kek).decrypt(sealed[:12], sealed[12:], _aad(kid, alg))
    except InvalidTag:
        raise KeyRingError(
            f"signing key {kid} cannot be decrypted: wrong key-encryption key or a tampered row"
        ) from None
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyRingError(f"signing key {kid} has an unsupported type")
    return key


_encode_claims = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class NewKey:
    kid: str
    alg: str
    public_jwk: dict[str, Any]
    sealed: bytes


def generate_key(material: KeyMaterial, alg: str) -> NewKey:
    private = _generate_private(alg)
    jwk = public_jwk(private, alg)
    return NewKey(kid=jwk["kid"], alg=alg, public_jwk=jwk, sealed=seal(material, private, jwk["kid"], alg))


async def store_key(
    store: KeyStore, conn: AsyncConnection, key: NewKey, material: KeyMaterial, state: str, now: int
) -> None:
    """Insert ``key`` (sealed under ``material``'s key-encryption key) in ``state``."""
    await store.insert(
        conn,
        kid=key.kid,
        alg=key.alg,
        public_jwk=key.public_jwk,
        sealed=key.sealed,
        kek_id=material.kek_id,
        state=state,
        now=now,
    )


class Signer:
    """Signs access tokens with one private key; the header carries its ``kid`` and ``typ``."""

    __slots__ = ("_algorithm", "_header", "_id_header", "_key", "alg", "kid")

    def __init__(self, kid: str, alg: str, key: PrivateKey) -> None:
        self.kid = kid
        self.alg = alg
        self._key = key
        # What jwt.encode does on every call, done once: the protected header, encoded as PyJWT
        # encodes it (sorted keys, compact separators), and PyJWT's algorithm object.
        self._header = self._encode_header(typ="at+jwt")  # RFC 9068 2.1
        self._id_header = self._encode_header(typ="JWT")  # an OpenID Connect ID token
        self._algorithm = get_default_algorithms()[alg]

    def _encode_header(self, *, typ: str) -> bytes:
        header = json.dumps(
            {"alg": self.alg, "kid": self.kid, "typ": typ}, separators=(",", ":"), sort_keys=True
        )
        return base64url_encode(header.encode()) + b"."

    def sign(self, claims: dict[str, Any], *, id_token: bool = False) -> str:
        """A compact JWS (RFC 7515 7.1) as ``jwt.encode`` makes it; ``typ`` is ``at+jwt`` (an
        access token) or, with ``id_token``, ``JWT``, so that neither can pass for the other.

        The signature is PyJWT's algorithm object over cryptography (for ES256 the DER signature
        converted to the raw ``r || s`` that RFC 7518 3.4 requires); skipping jwt.encode's
        per-call header and key handling saves about 60 us a token. The claims are encoded by
        msgspec, compact and in the dictionary's order, about 4 us sooner than ``json.dumps``
        (what jwt.encode signs) and the same bytes, but that DEL and non-ASCII characters are
        written as themselves, in UTF-8, where json.dumps writes ``\\u`` escapes (both are JSON,
        RFC 8259 7 and 8.1; a JWT's JSON is UTF-8, RFC 7519 7.1).
        """
        header = self._id_header if id_token else self._header
        signing_input = header + base64url_encode(_encode_claims(claims))
        signature = self._algorithm.sign(signing_input, self._key)
        return (signing_input + b"." + base64url_encode(signature)).decode("ascii")


class KeyRing:
    """The process's view of the ring: the active signer and the published JWKS."""

    def __init__(self, db: Database, material: KeyMaterial, alg: str, store: KeyStore | None = None) -> None:
        self.db = db
        self.store = store or KeyStore()
        self.material = material
        self.alg = alg
        self._signer: Signer | None = None
        self.jwks: dict[str, Any] = {"keys": []}
        self.jwks_body: bytes = b'{"keys":[]}'
        self.jwks_etag: str = ""
        self.fingerprint: tuple[tuple[str, str], ...] = ()
        # kids revoked by `scripts/rotate_keys.py revoke` whose tokens may still be unexpired:
        # introspection and verifiers reject tokens carrying one (issuer.keys.rotation.revoke).
        self.revoked_kids: frozenset[str] = frozenset()
        # The denylist's kids (a live set, shared by reference): revoked whatever the rows say.
        self.denied_kids: Container[str] = frozenset()
        # The database still names as active a key the denylist lists: `issuer keys revoke` has
        # denylisted it and not yet committed its successor (or failed to: the operator reruns it).
        self.active_denied = False

    @property
    def kids(self) -> list[str]:
        """The published kids, newest first."""
        return [kid for kid, state in self.fingerprint if state != "revoked"]

    def is_revoked(self, kid: str) -> bool:
        return kid in self.revoked_kids or kid in self.denied_kids

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            # e.g. the active key was revoked and this instance has not reloaded yet, or it cannot
            # decrypt the new one: answer 503 (retry), never sign with a key no longer active
            raise TemporarilyUnavailable(detail="no active signing key is loaded")
        return self._signer

    async def ensure_active(self) -> None:
        """First start: create and activate a key when the ring has none. Safe to race."""
        async with self.db.transaction() as conn:
            active = await self.store.active_kid(conn)
        if active is None:
            key = await asyncio.to_thread(generate_key, self.material, self.alg)  # CPU: off the loop
            try:
                async with self.db.transaction() as conn:
                    await store_key(self.store, conn, key, self.material, "active", int(time.time()))
            except IntegrityError:
                pass  # another instance activated one first; the unique index kept it to one
        await self.reload()

    async def reload(self) -> bool:
        """Reread the ring; returns True when it changed. Decrypts only a newly active key."""
        async with self.db.transaction() as conn:
            rows = await self.store.sealed(conn, STATES)
        denied = self.denied_kids
        fingerprint = tuple((row.kid, "revoked" if row.kid in denied else row.state) for row in rows)
        self.active_denied = any(row.state == "active" and row.kid in denied for row in rows)
        if fingerprint == self.fingerprint and self._signer is not None:
            return False
        self.revoked_kids = frozenset(kid for kid, state in fingerprint if state == "revoked")
        rows = [row for row in rows if row.state != "revoked" and row.kid not in denied]
        active = [row for row in rows if row.state == "active"]
        if not active:
            self._signer = None  # never sign with a key the database no longer calls active
        elif self._signer is None or self._signer.kid != active[0].kid:
            row = active[0]
            self._signer = None  # until the new key is decrypted: never sign with a retired one
            self._signer = Signer(
                row.kid, row.alg, unseal(self.material.kek, row.private_key, row.kid, row.alg)
            )
        keys = []
        for row in rows:
            jwk = json.loads(row.public_jwk)
            if PRIVATE_MEMBERS & jwk.keys():
                raise KeyRingError(f"key {row.kid} has private members in its public JWK")
            keys.append(jwk)
        self.jwks = {"keys": keys}
        self.jwks_body = json.dumps(self.jwks, separators=(",", ":"), sort_keys=True).encode()
        self.jwks_etag = '"' + hashlib.sha256(self.jwks_body).hexdigest()[:32] + '"'
        self.fingerprint = fingerprint
        return True
