"""The resource server's verifier: RFC 9068 access tokens checked locally against the JWKS.

::

    verifier = Verifier(issuer="https://auth.example", audience="https://api.example")
    claims = verifier.verify(token)            # or: await verifier.verify_async(token)

What it checks, in order (each failure raises :class:`InvalidToken` with a short ``reason``):

* the compact JWS shape: three base64url parts, strict alphabet, JSON header (``malformed``);
* the header: ``typ`` is ``at+jwt`` (RFC 9068 2.1, ``wrong_type``), no ``crit`` (RFC 7515
  4.1.11: we understand no extension, ``unsupported_critical``), a string ``kid``; ``jwk``,
  ``jku``, ``x5u`` and ``x5c`` are ignored and never fetched;
* the key: found by ``kid`` in the issuer's JWKS (``unknown_key``); the algorithm is the key's
  own, and a header naming another one is rejected (RFC 8725 3.1, ``wrong_algorithm``): no
  ``none``, no HMAC with a public key;
* the signature, with ``cryptography`` (``bad_signature``);
* the claims (RFC 9068 2.2, RFC 7519 4.1): ``iss`` (``wrong_issuer``), ``aud`` string or list
  (``wrong_audience``), ``exp`` (``expired``), ``nbf`` and ``iat`` (``not_yet_valid``) with a
  leeway; numeric dates must be numbers, ``sub``/``client_id``/``jti`` strings (``malformed``);
* optionally the denylist (:mod:`issuer_verify.denylist`): ``revoked``, or
  ``denylist_stale`` when the local copy is older than its bound (fail closed).

Keys: discovered from RFC 8414 metadata (``{issuer}/.well-known/oauth-authorization-server``,
whose ``issuer`` must match, RFC 8414 3.3), cached for the JWKS ``Cache-Control: max-age``
(revalidated with ``If-None-Match``), refetched on an unknown ``kid`` at most once per
``refetch_interval`` whatever arrives. When the issuer cannot be reached the cached keys stay in
use for ``stale_if_error`` seconds past their expiry, then verification fails (``unavailable``).

The same rules, without the network, are :func:`decode`: the issuer's introspection (RFC 7662)
and revocation (RFC 7009) read their own access tokens with it, against the key ring's JWKS.

This module imports no web framework and nothing of the server (no database, no Litestar): a
resource server installs the ``issuer-verify`` distribution and uses only this. The Litestar
guard is in :mod:`issuer_verify.litestar`.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt import PyJWK, PyJWTError

if TYPE_CHECKING:
    from issuer_verify.denylist import Denylist

__all__ = [
    "REASONS",
    "SUPPORTED_ALGORITHMS",
    "UNAVAILABLE_REASONS",
    "InvalidToken",
    "VerificationKey",
    "Verifier",
    "check_claims",
    "decode",
    "expired",
    "load_jwks",
    "load_key",
]

log = logging.getLogger("issuer_verify")

SUPPORTED_ALGORITHMS = ("ES256", "RS256", "EdDSA")
REASONS = frozenset(
    {
        "malformed",
        "wrong_type",
        "unsupported_critical",
        "wrong_algorithm",
        "unknown_key",
        "bad_signature",
        "wrong_issuer",
        "wrong_audience",
        "expired",
        "not_yet_valid",
        "revoked",
        "denylist_stale",
        "unavailable",
    }
)
# Reasons that are the verifier's trouble, not the token's: a resource server answers 503.
UNAVAILABLE_REASONS = frozenset({"unavailable", "denylist_stale"})
_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 2.1; media types compare case-insensitively
_KID_LIMIT = 256


class InvalidToken(Exception):
    """The token is not acceptable. ``reason`` is one of :data:`REASONS`; ``detail`` is for logs
    (it never contains the token)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- parsing primitives

_TO_STD = bytes.maketrans(b"-_", b"+/")


def _b64decode(part: str) -> bytes:
    """Strict base64url without padding (RFC 7515 2): the standard alphabet's ``+``/``/`` and
    padding are rejected, and ``binascii``'s strict mode rejects anything else out of alphabet."""
    raw = part.encode("ascii")
    if b"+" in raw or b"/" in raw or b"=" in raw:
        raise ValueError("not base64url")
    return binascii.a2b_base64(raw.translate(_TO_STD) + b"=" * (-len(raw) % 4), strict_mode=True)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's json would accept them


_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = _JSON.decode(raw.decode("utf-8"))
    except RecursionError:  # "[[[[...": nesting past Python's limit (tests/fuzz/corpus/token)
        raise ValueError("JSON nested too deeply") from None
    if type(value) is not dict:
        raise ValueError("not a JSON object")
    return value


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value
    raise InvalidToken("malformed", f"{name} is not a NumericDate")  # RFC 7519 2


# ---------------------------------------------------------------- keys

_ECDSA = ec.ECDSA(hashes.SHA256())
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key of the JWKS and the single algorithm it verifies."""

    kid: str
    alg: str
    verify: Callable[[bytes, bytes], None]  # (signature, signing input); raises InvalidSignature


def _infer_alg(jwk: Mapping[str, Any]) -> str | None:
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return "ES256"
    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        return "EdDSA"
    if jwk.get("kty") == "RSA":
        return "RS256"
    return None


def load_key(jwk: Mapping[str, Any]) -> VerificationKey | None:
    """A verification key from one JWK, or None when it is not a usable public signing key."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or jwk.get("use", "sig") != "sig":
        return None
    if _PRIVATE_MEMBERS & jwk.keys():
        return None  # a JWKS must carry public keys only; refuse to treat a leak as normal
    alg = jwk.get("alg") or _infer_alg(jwk)
    if alg not in SUPPORTED_ALGORITHMS:
        return None
    try:
        key = PyJWK(dict(jwk), algorithm=alg).key
    except (PyJWTError, ValueError, TypeError, KeyError):
        return None
    if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        ec_key = key

        def verify_es256(signature: bytes, data: bytes) -> None:
            if len(signature) != 64:  # RFC 7518 3.4: R || S, 32 octets each
                raise InvalidSignature
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            ec_key.verify(encode_dss_signature(r, s), data, _ECDSA)

        return VerificationKey(kid, alg, verify_es256)
    if alg == "RS256" and isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        rsa_key = key
        return VerificationKey(kid, alg, lambda sig, data: rsa_key.verify(sig, data, _PKCS1, _SHA256))
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
        return VerificationKey(kid, alg, key.verify)
    return None


def load_jwks(document: Any) -> dict[str, VerificationKey]:
    """The usable keys of a JWKS document by ``kid``; unusable members are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS is an object with a 'keys' array (RFC 7517 5)")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        if isinstance(jwk, dict) and (key := load_key(jwk)) is not None:
            keys[key.kid] = key
    return keys


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


def _cache_lifetime(cache_control: str | None) -> float | None:
    if not cache_control:
        return None
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


# ---------------------------------------------------------------- the rules


def _split(token: str, max_token_bytes: int) -> tuple[bytes, str, str, bytes]:
    if not isinstance(token, str) or len(token) > max_token_bytes or not token.isascii():
        raise InvalidToken("malformed", "not a compact JWS of acceptable size")
    parts = token.split(".")
    if len(parts) != 3:  # RFC 7515 7.1: exactly three parts (five would be JWE)
        raise InvalidToken("malformed", f"{len(parts)} parts")
    header_part, payload_part, signature_part = parts
    try:
        signature = _b64decode(signature_part)
    except (ValueError, binascii.Error):
        raise InvalidToken("malformed", "signature is not base64url") from None
    signing_input = token[: len(header_part) + 1 + len(payload_part)].encode("ascii")
    return signing_input, header_part, payload_part, signature


def _read_header(header_part: str) -> tuple[str, str]:
    """``(kid, alg)`` of a JWS header that an access token may have."""
    try:
        header = _json_object(_b64decode(header_part))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidToken("malformed", "header is not base64url JSON") from None
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in _TYPES:
        raise InvalidToken("wrong_type", "typ is not at+jwt")
    if "crit" in header:
        raise InvalidToken("unsupported_critical", "crit names extensions this verifier does not know")
    alg = header.get("alg")
    kid = header.get("kid")
    if not isinstance(alg, str) or not isinstance(kid, str) or not kid or len(kid) > _KID_LIMIT:
        raise InvalidToken("malformed", "alg and kid must be strings")
    return kid, alg


def _signed_claims(
    key: VerificationKey, alg: str, kid: str, signing_input: bytes, payload_part: str, signature: bytes
) -> dict[str, Any]:
    if alg != key.alg:  # the key decides the algorithm, never the header (RFC 8725 3.1)
        raise InvalidToken("wrong_algorithm", f"header alg {alg!r} but key {kid} is {key.alg}")
    try:
        key.verify(signature, signing_input)
    except InvalidSignature:
        raise InvalidToken("bad_signature") from None
    try:
        return _json_object(_b64decode(payload_part))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidToken("malformed", "payload is not base64url JSON") from None


def expired(exp: float, now: float, leeway: float) -> bool:
    """RFC 7519 4.1.4: a token must not be accepted on or after its ``exp`` (plus ``leeway``)."""
    return now - leeway >= exp


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audiences: frozenset[str] | None,
    now: float,
    leeway: float,
    check_expiry: bool = True,
) -> None:
    """The claim rules (RFC 9068 2.2, RFC 7519 4.1); :class:`InvalidToken` when one fails.

    ``audiences`` None accepts any ``aud`` (the issuer reading its own tokens, which any audience
    may hold); ``check_expiry`` False leaves ``exp`` (still required, a NumericDate) to the
    caller, who applies :func:`expired` (revocation acts on expired tokens too)."""
    if claims.get("iss") != issuer:
        raise InvalidToken("wrong_issuer")
    if audiences is not None:
        aud = claims.get("aud")
        if isinstance(aud, str):
            if aud not in audiences:
                raise InvalidToken("wrong_audience")
        elif not isinstance(aud, list) or not any(isinstance(a, str) and a in audiences for a in aud):
            raise InvalidToken("wrong_audience")
    exp = _numeric_date(claims, "exp")
    iat = _numeric_date(claims, "iat")
    if exp is None or iat is None:
        raise InvalidToken("malformed", "exp and iat are required (RFC 9068 2.2)")
    if check_expiry and expired(exp, now, leeway):
        raise InvalidToken("expired")
    nbf = _numeric_date(claims, "nbf")
    if iat > now + leeway or (nbf is not None and nbf > now + leeway):
        raise InvalidToken("not_yet_valid")
    for name in ("sub", "client_id", "jti"):
        if type(claims.get(name)) is not str:
            raise InvalidToken("malformed", f"{name} must be a string (RFC 9068 2.2)")
    if "sid" in claims and type(claims["sid"]) is not str:
        raise InvalidToken("malformed", "sid must be a string")


def decode(
    token: str,
    keys: Mapping[str, VerificationKey],
    *,
    issuer: str,
    audiences: frozenset[str] | None,
    now: float,
    leeway: float,
    check_expiry: bool = True,
    max_token_bytes: int = 8192,
) -> tuple[str, dict[str, Any]]:
    """``(kid, claims)`` of an access token signed by one of ``keys`` (from :func:`load_jwks`),
    by the rules of the module docstring, with no network and no denylist; :class:`InvalidToken`
    otherwise (``unknown_key`` for a ``kid`` not in ``keys``). See :func:`check_claims`."""
    signing_input, header_part, payload_part, signature = _split(token, max_token_bytes)
    kid, alg = _read_header(header_part)
    key = keys.get(kid)
    if key is None:
        raise InvalidToken("unknown_key")
    claims = _signed_claims(key, alg, kid, signing_input, payload_part, signature)
    check_claims(
        claims, issuer=issuer, audiences=audiences, now=now, leeway=leeway, check_expiry=check_expiry
    )
    return kid, claims


# ---------------------------------------------------------------- the verifier


class Verifier:
    """Verifies the issuer's access tokens locally. Thread-safe; one per process is enough.

    Keyword arguments: ``issuer`` (required; the ``iss`` to expect, and where the metadata
    lives), ``audience`` (required; a string or several, one of which ``aud`` must contain),
    ``jwks_uri`` (skip discovery), ``jwks`` (a fixed JWKS document: no network at all),
    ``leeway`` (seconds of clock skew allowed for ``exp``/``nbf``/``iat``; default 30),
    ``refetch_interval`` (at most one JWKS fetch per this many seconds for unknown ``kid``s;
    default 30; also the shortest cache lifetime), ``max_cache`` (longest JWKS cache; default one
    day), ``default_cache`` (lifetime without ``max-age``; default 300), ``stale_if_error``
    (keep expired keys while the issuer is unreachable; default 300), ``denylist`` (a
    :class:`~issuer_verify.denylist.Denylist`, started here), ``http`` (an ``httpx.Client``),
    ``timeout`` (seconds per HTTP request; default 5), ``clock`` (monotonic time, for caching).
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Iterable[str],
        jwks_uri: str | None = None,
        jwks: Mapping[str, Any] | None = None,
        leeway: float = 30.0,
        refetch_interval: float = 30.0,
        max_cache: float = 86400.0,
        default_cache: float = 300.0,
        stale_if_error: float = 300.0,
        denylist: Denylist | None = None,
        http: httpx.Client | None = None,
        timeout: float = 5.0,
        max_token_bytes: int = 8192,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer:
            raise ValueError("issuer is required")
        self.issuer = issuer
        self.audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ValueError("audience must be a non-empty string or strings")
        if leeway < 0 or refetch_interval <= 0 or max_cache <= 0:
            raise ValueError("leeway must be >= 0, refetch_interval and max_cache > 0")
        self.leeway = leeway
        self.refetch_interval = refetch_interval
        self.max_cache = max_cache
        self.default_cache = default_cache
        self.stale_if_error = stale_if_error
        self.max_token_bytes = max_token_bytes
        self.denylist = denylist
        self._clock = clock
        self._timeout = timeout
        self._http = http
        self._own_http = http is None
        self._jwks_uri = jwks_uri
        self._static = jwks is not None
        self._keys: dict[str, VerificationKey] = load_jwks(jwks) if jwks is not None else {}
        self._expires_at = math.inf if jwks is not None else -math.inf
        self._last_attempt = -math.inf
        self._etag: str | None = None
        self._lock = threading.Lock()
        self._headers: dict[str, tuple[str, str]] = {}  # header part -> (kid, alg): validated headers
        self.fetches = 0  # JWKS requests made (metadata excluded); for metrics and tests
        if denylist is not None:
            denylist.start()

    # ------------------------------------------------------------ public API

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or :class:`InvalidToken`. May fetch the JWKS (blocking)."""
        signing_input, header_part, payload_part, signature = self._split(token)
        kid, alg = self._header(header_part)
        key = self._cached_key(kid)
        if key is None:
            key = self._fetch_key(kid)
        return self._finish(key, alg, kid, signing_input, payload_part, signature)

    async def verify_async(self, token: str) -> dict[str, Any]:
        """:meth:`verify` for event loops: any JWKS fetch runs in a worker thread."""
        signing_input, header_part, payload_part, signature = self._split(token)
        kid, alg = self._header(header_part)
        key = self._cached_key(kid)
        if key is None:
            key = await asyncio.to_thread(self._fetch_key, kid)
        return self._finish(key, alg, kid, signing_input, payload_part, signature)

    def refresh(self) -> None:
        """Fetch the JWKS now (e.g. at start, to fail early when the issuer is unreachable)."""
        with self._lock:
            self._fetch()

    def close(self) -> None:
        if self.denylist is not None:
            self.denylist.close()
        if self._own_http and self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the hot path

    def _split(self, token: str) -> tuple[bytes, str, str, bytes]:
        return _split(token, self.max_token_bytes)

    def _header(self, header_part: str) -> tuple[str, str]:
        cached = self._headers.get(header_part)
        if cached is not None:
            return cached
        kid, alg = _read_header(header_part)
        if len(self._headers) >= 64:
            self._headers.clear()  # a handful of real headers exist; garbage cannot grow this
        self._headers[header_part] = (kid, alg)
        return kid, alg

    def _finish(
        self,
        key: VerificationKey,
        alg: str,
        kid: str,
        signing_input: bytes,
        payload_part: str,
        signature: bytes,
    ) -> dict[str, Any]:
        claims = _signed_claims(key, alg, kid, signing_input, payload_part, signature)
        check_claims(
            claims, issuer=self.issuer, audiences=self.audiences, now=time.time(), leeway=self.leeway
        )
        if self.denylist is not None:
            reason = self.denylist.check(kid, claims)
            if reason is not None:
                raise InvalidToken(reason)
        return claims

    # ------------------------------------------------------------ keys and fetching

    def _cached_key(self, kid: str) -> VerificationKey | None:
        """The key when no fetch is due; None when the caller must go through :meth:`_fetch_key`."""
        if self._clock() < self._expires_at:
            key = self._keys.get(kid)
            if key is not None:
                return key
            if self._static or self._clock() - self._last_attempt < self.refetch_interval:
                raise InvalidToken("unknown_key")
        return None

    def _fetch_key(self, kid: str) -> VerificationKey:
        with self._lock:  # one fetch at a time; whoever waited rechecks what it brought
            now = self._clock()
            fresh = now < self._expires_at
            if fresh and kid in self._keys:
                return self._keys[kid]
            # An unknown kid refetches at most once per refetch_interval; an expired cache
            # retries a failed fetch at most once a second.
            interval = self.refetch_interval if fresh else 1.0
            if now - self._last_attempt >= interval:
                try:
                    self._fetch()
                except InvalidToken:
                    if now >= self._expires_at + self.stale_if_error:
                        raise
                    log.warning("the issuer's JWKS is unreachable; using the expired copy (stale_if_error)")
            elif not fresh and now >= self._expires_at + self.stale_if_error:
                raise InvalidToken("unavailable", "the JWKS could not be fetched")
            key = self._keys.get(kid)
            if key is None:
                raise InvalidToken("unknown_key")
            return key

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self._timeout, follow_redirects=False)
        return self._http

    def _discover(self) -> str:
        if self._jwks_uri is None:
            url = self.issuer.rstrip("/") + "/.well-known/oauth-authorization-server"
            response = self._client().get(url)
            response.raise_for_status()
            metadata = response.json()
            if not isinstance(metadata, dict) or metadata.get("issuer") != self.issuer:
                raise ValueError("the metadata names another issuer (RFC 8414 3.3)")
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise ValueError("the metadata has no jwks_uri")
            self._jwks_uri = jwks_uri
        return self._jwks_uri

    def _fetch(self) -> None:
        """One JWKS request (conditional when an ETag is known). Call with the lock held."""
        self._last_attempt = self._clock()
        try:
            uri = self._discover()
            headers = {"Accept": "application/json"}
            if self._etag and self._keys:
                headers["If-None-Match"] = self._etag
            self.fetches += 1
            response = self._client().get(uri, headers=headers)
            if response.status_code == 304:
                keys = self._keys
            else:
                response.raise_for_status()
                keys = load_jwks(response.json())
                self._etag = response.headers.get("etag")
        except (httpx.HTTPError, ValueError) as error:
            log.warning("cannot fetch the issuer's keys: %s", type(error).__name__)
            raise InvalidToken("unavailable", f"JWKS fetch failed: {type(error).__name__}") from None
        lifetime = _cache_lifetime(response.headers.get("cache-control"))
        lifetime = self.default_cache if lifetime is None else lifetime
        lifetime = min(max(lifetime, self.refetch_interval), self.max_cache)
        self._keys = keys
        self._expires_at = self._clock() + lifetime
