"""Standard verifiers accept our tokens with nothing but the JWKS, for every algorithm: PyJWT's
PyJWKClient, joserfc, and Node.js jose (createRemoteJWKSet + jwtVerify). And they reject a
token with a flipped signature bit, so "accepts" means something."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from tests import support
from tests.verify.support import Issuer

HERE = Path(__file__).resolve().parent


def tampered(token: str) -> str:
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[0] ^= 0x80
    return f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


def jwks_uri(issuer: Issuer) -> str:
    metadata = support.get(issuer.url + "/.well-known/oauth-authorization-server").json()
    return str(metadata["jwks_uri"])


def check_pyjwt_pyjwkclient(any_issuer: Issuer) -> None:
    token = any_issuer.token("notes:read")
    client = jwt.PyJWKClient(jwks_uri(any_issuer))
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key,
        algorithms=[any_issuer.alg],
        audience=any_issuer.url,
        issuer=any_issuer.url,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    assert claims["client_id"] == any_issuer.client_id
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(tampered(token), key, algorithms=[any_issuer.alg], audience=any_issuer.url)


# joserfc warns that the name "EdDSA" is deprecated by RFC 9864 (in favour of "Ed25519"); it
# still verifies it, and "EdDSA" is what PyJWT and jose emit and accept, so the warning is noted
# here rather than failing the run.
def check_joserfc(any_issuer: Issuer) -> None:
    token = any_issuer.token("notes:read")
    keys = KeySet.import_key_set(support.get(jwks_uri(any_issuer)).json())
    decoded = jose_jwt.decode(token, keys, algorithms=[any_issuer.alg])
    assert decoded.header["typ"] == "at+jwt"
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": any_issuer.url},
        aud={"essential": True, "value": any_issuer.url},
        exp={"essential": True},
        sub={"essential": True},
        jti={"essential": True},
    )
    registry.validate(decoded.claims)
    assert decoded.claims["client_id"] == any_issuer.client_id
    with pytest.raises(JoseError):
        jose_jwt.decode(tampered(token), keys, algorithms=[any_issuer.alg])


def node_verify(issuer: Issuer, token: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "Node.js is needed for the jose interop test"
    assert (HERE / "node_modules" / "jose").is_dir(), "run `npm ci` in tests/interop (scripts/test does)"
    result = subprocess.run(
        [node, str(HERE / "verify.mjs"), jwks_uri(issuer), issuer.url, issuer.url, token],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HERE,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def check_node_jose(any_issuer: Issuer) -> None:
    token = any_issuer.token("notes:read")
    verdict = node_verify(any_issuer, token)
    assert verdict["ok"] is True, verdict
    assert verdict["alg"] == any_issuer.alg
    assert verdict["payload"]["client_id"] == any_issuer.client_id
    assert node_verify(any_issuer, tampered(token)) == {
        "ok": False,
        "code": "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
    }


def check_issuer_verify(any_issuer: Issuer) -> None:
    from issuer_verify import Verifier

    with Verifier(issuer=any_issuer.url, audience=any_issuer.url) as verifier:
        assert verifier.verify(any_issuer.token("notes:read"))["scope"] == "notes:read"


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated via RFC 9864")
def test_standard_verifiers_accept_our_tokens(any_issuer: Issuer) -> None:
    """One issuer per algorithm; each verifier in turn (a failure names the verifier)."""
    check_pyjwt_pyjwkclient(any_issuer)
    check_joserfc(any_issuer)
    check_node_jose(any_issuer)
    check_issuer_verify(any_issuer)
