"""Fuzz targets: the form parser, the Basic-credential parser and token parsing, as plain
functions of one ``bytes`` input. Each returns normally for any input, or raises (a finding).

An input may be refused only with the error its parser documents (``InvalidRequest`` and
``UnsupportedMediaType`` for forms, ``InvalidClient`` for Basic, ``InvalidToken`` for the
verifier); anything else (``RecursionError``, ``KeyError``, ``UnicodeError``...) is a crash, and so
is an accepted value that breaks the parser's promise (a NUL in a form value, a non-ASCII
client_id). ``scripts/fuzz.py`` drives them with atheris; ``tests/fuzz/test_corpus.py`` runs every
input kept in ``tests/fuzz/corpus/<target>/`` through them on every test run.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from issuer.errors import InvalidClient, InvalidRequest
from issuer.http.edge import parse_basic
from issuer.http.forms import parse_form
from issuer.tokens import RefreshTokens
from issuer_verify import InvalidToken, Verifier

__all__ = ["TARGETS"]

ISSUER = "https://issuer.example"
AUDIENCE = "https://api.example"
FORM = "application/x-www-form-urlencoded"
CONTENT_TYPES = (FORM, FORM + "; charset=UTF-8", FORM + "; charset=latin-1", "application/json", None)
_FORM_TEXT = re.compile("[\t\x20-\x7e\x80-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
_VSCHAR = re.compile(r"[\x20-\x7e]+")


def form(data: bytes) -> None:
    """``parse_form``: a content type (first byte) and a body (the rest)."""
    if not data:
        return
    choice = data[0]
    content_type = (
        CONTENT_TYPES[choice % len(CONTENT_TYPES)] if choice < 250 else data[1:40].decode("latin-1")
    )
    try:
        parsed = parse_form(content_type, data[1:])
    except InvalidRequest:  # UnsupportedMediaType is an InvalidRequest
        return
    for name, value in parsed.items():
        assert value, "an empty value counts as omitted"
        assert _FORM_TEXT.fullmatch(name) and _FORM_TEXT.fullmatch(value), (name, value)


def basic(data: bytes) -> None:
    """``parse_basic``: a header value as the server sees it (latin-1); first byte picks whether
    the rest is the whole header or the bytes that go inside ``Basic <base64>``."""
    if not data:
        return
    if data[0] & 1:
        header = data[1:].decode("latin-1")
    else:
        header = "Basic " + base64.b64encode(data[1:]).decode("ascii")
    try:
        client_id, secret = parse_basic(header)
    except InvalidClient as error:
        assert error.basic, "a Basic refusal carries the challenge"
        return
    assert 1 <= len(client_id) <= 64 and _VSCHAR.fullmatch(client_id), client_id
    assert _VSCHAR.fullmatch(secret), secret


@cache
def _signer() -> tuple[ec.EllipticCurvePrivateKey, Verifier]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    verifier = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks={"keys": [jwk]})
    return key, verifier


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _verify(verifier: Verifier, token: str) -> None:
    try:
        claims = verifier.verify(token)
    except InvalidToken:
        return
    assert claims["iss"] == ISSUER and isinstance(claims["exp"], int | float), claims


def token(data: bytes) -> None:
    """Token parsing. First byte: 0-1 a raw string for ``Verifier.verify`` and the refresh-token
    parser; 2 a header and claims (split at the first NUL) signed with the verifier's own key,
    so that the claims' parsing and checks are reached; 3 the same with a well-formed header."""
    if not data:
        return
    key, verifier = _signer()
    mode, rest = data[0] % 4, data[1:]
    if mode < 2:
        text = rest.decode("latin-1")
        _verify(verifier, text)
        if RefreshTokens.well_formed(text):
            assert len(RefreshTokens.digest(text)) == 32
        return
    header, _, payload = rest.partition(b"\x00")
    if mode == 3:
        claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}
        payload = (
            json.dumps(claims).encode()[:-1] + b"," + payload if payload else json.dumps(claims).encode()
        )
        header = b'{"alg":"ES256","kid":"k1","typ":"at+jwt"' + (b"," + header if header else b"") + b"}"
    signing_input = f"{_b64url(header)}.{_b64url(payload)}"
    signature = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).sign(
        signing_input.encode(), key
    )
    _verify(verifier, f"{signing_input}.{_b64url(signature)}")


TARGETS: dict[str, Callable[[bytes], None]] = {"form": form, "basic": basic, "token": token}
