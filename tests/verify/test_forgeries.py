"""The forgery corpus: every case is rejected by issuer_verify with the reason that names it,
and (where the issuer has /introspect) is inactive there too. Tokens that must carry a valid
signature to reach the check under test are signed with the issuer's real key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from issuer.keys.ring import public_jwk
from issuer_verify import InvalidToken, Verifier
from issuer_verify.denylist import RedisDenylist
from tests import support
from tests.verify.support import Counting, Issuer, counting_server, register_client


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value))


@dataclass
class Context:
    issuer: Issuer
    genuine: str  # a token the issuer minted
    attacker_key: ec.EllipticCurvePrivateKey
    attacker_jwk: dict[str, Any]
    elsewhere: Counting  # a server the token points at; it must never be asked
    verifiers: list[Verifier]  # closed after the test

    def real_kid(self) -> str:
        return str(jwt.get_unverified_header(self.genuine)["kid"])

    def sign_raw(self, header: dict[str, Any], payload_part: str) -> str:
        """Signs header + an arbitrary payload part with the issuer's real key."""
        kid, key = self.issuer.signing_key()
        head = b64json({"alg": self.issuer.alg, "kid": kid, "typ": "at+jwt", **header})
        algorithm = jwt.get_algorithm_by_name(self.issuer.alg)
        signature = algorithm.sign(f"{head}.{payload_part}".encode(), key)
        return f"{head}.{payload_part}.{b64(signature)}"

    def attacker(self, claims: dict[str, Any] | None = None, **header: Any) -> str:
        headers = {"kid": self.attacker_jwk["kid"], "typ": "at+jwt", **header}
        return jwt.encode(
            claims or self.issuer.claims(), self.attacker_key, algorithm="ES256", headers=headers
        )


def alg_none(c: Context) -> str:
    head = b64json({"alg": "none", "kid": c.real_kid(), "typ": "at+jwt"})
    return f"{head}.{b64json(c.issuer.claims())}."


def hs256_with_public_key(c: Context) -> str:
    """Key confusion: the public key (PEM, as a naive verifier would load it) as HMAC secret."""
    _, key = c.issuer.signing_key()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64json({"alg": "HS256", "kid": c.real_kid(), "typ": "at+jwt"})
    signing_input = f"{head}.{b64json(c.issuer.claims())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def hs256_with_jwk(c: Context) -> str:
    jwks = support.get(c.issuer.url + "/.well-known/jwks.json").json()
    secret = json.dumps(jwks["keys"][0]).encode()
    head = b64json({"alg": "HS256", "kid": c.real_kid(), "typ": "at+jwt"})
    signing_input = f"{head}.{b64json(c.issuer.claims())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def flip_bit(token: str) -> str:
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{b64(bytes(raw))}"


CASES: list[tuple[str, Callable[[Context], str], str]] = [
    ("alg none with the real kid", alg_none, "wrong_algorithm"),
    ("HS256 keyed with the public key PEM (key confusion)", hs256_with_public_key, "wrong_algorithm"),
    ("HS256 keyed with the public JWK", hs256_with_jwk, "wrong_algorithm"),
    ("header jwk carrying the attacker's key", lambda c: c.attacker(jwk=c.attacker_jwk), "unknown_key"),
    (
        "header jku pointing at the attacker's JWKS",
        lambda c: c.attacker(jku=c.elsewhere.url + "/jwks.json"),
        "unknown_key",
    ),
    ("header x5u pointing elsewhere", lambda c: c.attacker(x5u=c.elsewhere.url + "/cert.pem"), "unknown_key"),
    (
        "jku with the real kid, signed by the attacker",
        lambda c: c.attacker(kid=c.real_kid(), jku=c.elsewhere.url + "/jwks.json"),
        "bad_signature",
    ),
    ("unknown kid", lambda c: c.attacker(kid="no-such-key"), "unknown_key"),
    ("kid with a path", lambda c: c.attacker(kid="../../../../etc/passwd"), "unknown_key"),
    ("kid with SQL", lambda c: c.attacker(kid="x' OR '1'='1'; DROP TABLE signing_keys; --"), "unknown_key"),
    (
        "crit with an unknown extension",
        lambda c: c.issuer.sign(c.issuer.claims(), crit=["urn:example:ext"], **{"urn:example:ext": 1}),
        "unsupported_critical",
    ),
    ("a flipped signature bit", lambda c: flip_bit(c.genuine), "bad_signature"),
    ("truncated: signature shortened", lambda c: c.genuine[:-4], "bad_signature"),
    ("truncated: no signature part", lambda c: c.genuine.rsplit(".", 1)[0], "malformed"),
    ("truncated: empty signature", lambda c: c.genuine.rsplit(".", 1)[0] + ".", "bad_signature"),
    ("an extra segment", lambda c: c.genuine + ".AAAA", "malformed"),
    ("five segments (JWE shape)", lambda c: c.genuine + ".AAAA.AAAA", "malformed"),
    ("non-base64 header", lambda c: "!!!." + c.genuine.split(".", 1)[1], "malformed"),
    ("standard-alphabet base64 header", lambda c: "ab+/" + c.genuine[4:], "malformed"),
    ("non-JSON header", lambda c: b64("not json") + "." + c.genuine.split(".", 1)[1], "malformed"),
    ("header a JSON array", lambda c: b64json(["at+jwt"]) + "." + c.genuine.split(".", 1)[1], "malformed"),
    ("non-base64 signature", lambda c: c.genuine.rsplit(".", 1)[0] + ".%%%%", "malformed"),
    ("non-base64 payload, validly signed", lambda c: c.sign_raw({}, "%%%%"), "malformed"),
    ("non-JSON payload, validly signed", lambda c: c.sign_raw({}, b64("not json")), "malformed"),
    (
        "NaN exp, validly signed",
        lambda c: c.sign_raw({}, b64(json.dumps(c.issuer.claims(exp=float("nan"))))),
        "malformed",
    ),
    ("typ JWT", lambda c: c.issuer.sign(c.issuer.claims(), typ="JWT"), "wrong_type"),
    ("no typ", lambda c: c.sign_raw({"typ": None}, b64json(c.issuer.claims())), "wrong_type"),
    ("wrong iss", lambda c: c.issuer.sign(c.issuer.claims(iss="https://evil.example")), "wrong_issuer"),
    (
        "wrong aud",
        lambda c: c.issuer.sign(c.issuer.claims(aud="https://other-api.example")),
        "wrong_audience",
    ),
    (
        "aud list without us",
        lambda c: c.issuer.sign(c.issuer.claims(aud=["https://a", "https://b"])),
        "wrong_audience",
    ),
    ("no aud", lambda c: c.issuer.sign(c.issuer.claims(aud=None)), "wrong_audience"),
    ("expired", lambda c: c.issuer.sign(c.issuer.claims(exp=int(time.time()) - 120)), "expired"),
    (
        "nbf in the future",
        lambda c: c.issuer.sign(c.issuer.claims(nbf=int(time.time()) + 600)),
        "not_yet_valid",
    ),
    (
        "iat in the future",
        lambda c: c.issuer.sign(c.issuer.claims(iat=int(time.time()) + 600)),
        "not_yet_valid",
    ),
    (
        "exp as a string",
        lambda c: c.issuer.sign(c.issuer.claims(exp=str(int(time.time()) + 300))),
        "malformed",
    ),
    ("exp missing", lambda c: c.issuer.sign(c.issuer.claims(exp=None)), "malformed"),
    ("sub not a string", lambda c: c.issuer.sign(c.issuer.claims(sub=42)), "malformed"),
    (
        "valid claims re-signed by a key not in the JWKS",
        lambda c: c.attacker(kid=c.real_kid()),
        "bad_signature",
    ),
]


@pytest.fixture
def context(issuer: Issuer) -> Iterator[Context]:
    attacker_key = ec.generate_private_key(ec.SECP256R1())
    attacker_jwk = public_jwk(attacker_key, "ES256")
    body = json.dumps({"keys": [attacker_jwk]}).encode()
    routes = {"/jwks.json": lambda: (200, {"Content-Type": "application/json"}, body)}
    with counting_server(routes) as elsewhere:
        context = Context(issuer, issuer.token("notes:read"), attacker_key, attacker_jwk, elsewhere, [])
        yield context
        for verifier in context.verifiers:
            verifier.close()


def introspector(issuer: Issuer) -> Callable[[str], dict[str, Any]] | None:
    """POST /introspect as a client registered --can-introspect; None while the issuer has none."""
    client_id, secret = register_client(issuer.server.env, "--can-introspect")

    def introspect(token: str) -> dict[str, Any]:
        response = support.post(issuer.url + "/introspect", data={"token": token}, auth=(client_id, secret))
        assert response.status_code == 200, response.text
        return dict(response.json())

    probe = support.post(issuer.url + "/introspect", data={"token": "x"}, auth=(client_id, secret))
    return None if probe.status_code in (404, 405) else introspect


# Tokens the issuer really signed for another audience are active at introspection: RFC 7662 4
# returns their ``aud`` and leaves the audience check to the resource server.
AUDIENCE_CASES = {"wrong aud", "aud list without us", "no aud"}


def test_the_genuine_token_passes(context: Context) -> None:
    with Verifier(issuer=context.issuer.url, audience=context.issuer.url) as verifier:
        claims = verifier.verify(context.genuine)
    assert claims["client_id"] == context.issuer.client_id
    assert claims["scope"] == "notes:read"


def test_every_forgery_is_rejected_with_its_reason(context: Context) -> None:
    verifier = Verifier(issuer=context.issuer.url, audience=context.issuer.url, refetch_interval=3600)
    verifier.verify(context.genuine)
    wrong = {}
    context.verifiers.append(verifier)
    for name, build, reason in CASES:
        token = build(context)
        try:
            verifier.verify(token)
        except InvalidToken as error:
            if error.reason != reason:
                wrong[name] = f"{error.reason} (expected {reason})"
        else:
            wrong[name] = f"accepted (expected {reason})"
    assert wrong == {}
    # jwk/jku/x5u are ignored: nothing was fetched from where the tokens pointed.
    assert sum(context.elsewhere.hits.values()) == 0


async def test_every_forgery_is_rejected_by_verify_async(context: Context) -> None:
    verifier = Verifier(issuer=context.issuer.url, audience=context.issuer.url, refetch_interval=3600)
    context.verifiers.append(verifier)
    assert (await verifier.verify_async(context.genuine))["jti"]
    reasons = {}
    for name, build, _ in CASES:
        with pytest.raises(InvalidToken) as caught:
            await verifier.verify_async(build(context))
        reasons[name] = caught.value.reason
    assert reasons == {name: reason for name, _, reason in CASES}


def test_every_forgery_is_inactive_at_introspect(context: Context) -> None:
    introspect = introspector(context.issuer)
    if introspect is None:
        pytest.skip("waits for POST /introspect on the issuer (the denylist issue, #3)")
    assert introspect(context.genuine)["active"] is True
    active = set()
    for name, build, _ in CASES:
        answer = introspect(build(context))
        if name in AUDIENCE_CASES and answer.get("active"):
            aud = answer.get("aud")
            assert context.issuer.url not in ([aud] if isinstance(aud, str) else aud or []), name
        elif answer.get("active"):
            active.add(name)
    assert active == set()


def test_revoked_family_and_denylisted_jti_are_rejected(context: Context, redis_prefix: str) -> None:
    """A token of a revoked refresh family (sid) and a denylisted jti: entries as the issuer
    writes them into Redis, read by the verifier's local copy."""
    issuer = context.issuer
    family = issuer.sign(issuer.claims(sid="sid_family1", jti="j-family"))
    denied = issuer.sign(issuer.claims(jti="j-denied"))
    untouched = issuer.sign(issuer.claims(jti="j-ok", sid="sid_other"))
    now = int(time.time())
    r = redis.Redis.from_url(support.REDIS_URL)
    for kind, value in (("sid", "sid_family1"), ("jti", "j-denied")):
        entry = {"kind": kind, "value": value, "at": now, "exp": now + 600}
        r.set(f"{redis_prefix}deny:{kind}:{value}", json.dumps(entry), ex=600)
    r.close()
    denylist = RedisDenylist(support.REDIS_URL, prefix=redis_prefix)
    with Verifier(issuer=issuer.url, audience=issuer.url, denylist=denylist) as verifier:
        assert denylist.wait_ready(10)
        assert verifier.verify(untouched)["jti"] == "j-ok"
        for token in (family, denied):
            with pytest.raises(InvalidToken) as caught:
                verifier.verify(token)
            assert caught.value.reason == "revoked"
