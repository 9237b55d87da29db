"""Signing throughput per algorithm: the issuer's Signer (PyJWT encoding, RFC 9068 header and
claims) next to raw ``cryptography`` signing of the same bytes, on one core of this machine.

    .venv/bin/python bench/signing.py [--seconds 1.0]

Prints tokens (or signatures) per second per core; the difference is the JWT encoding's cost.
"""

from __future__ import annotations

import argparse
import platform
import secrets
import time
from collections.abc import Callable

import cryptography
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from issuer.keys.material import KeyMaterial
from issuer.keys.ring import Signer, generate_key, unseal


def rate(operation: Callable[[], object], seconds: float) -> float:
    operation()  # warm up
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(20):
            operation()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def raw_signer(key: object) -> Callable[[bytes], bytes]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return lambda data: key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign
    raise TypeError(type(key))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per figure")
    args = parser.parse_args()
    material = KeyMaterial(kek=secrets.token_bytes(32), hmac_key=secrets.token_bytes(32))
    now = int(time.time())
    claims = {
        "iss": "https://issuer.example",
        "sub": "user-123",
        "aud": "https://api.example",
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_urlsafe(16),
        "client_id": "cli_abc",
        "scope": "read write",
        "sid": "fam_abc",
    }
    print(
        f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"cryptography {cryptography.__version__}, PyJWT {jwt.__version__}; "
        f"one core, {args.seconds:.1f} s each"
    )
    print(
        f"{'alg':<6} {'issuer Signer.sign (tokens/s)':>30} {'raw cryptography sign (/s)':>28} {'overhead':>9}"
    )
    for alg in ("ES256", "RS256", "EdDSA"):
        new = generate_key(material, alg)
        key = unseal(material.kek, new.sealed, new.kid, alg)
        signer = Signer(new.kid, alg, key)
        token = signer.sign(claims)
        signing_input = token.rsplit(".", 1)[0].encode()
        sign_raw = raw_signer(key)
        issuer_rate = rate(lambda s=signer: s.sign(claims), args.seconds)
        raw_rate = rate(lambda f=sign_raw, d=signing_input: f(d), args.seconds)
        overhead = (1 / issuer_rate - 1 / raw_rate) * 1e6
        print(f"{alg:<6} {issuer_rate:>30,.0f} {raw_rate:>28,.0f} {overhead:>6.1f} us")


if __name__ == "__main__":
    main()
