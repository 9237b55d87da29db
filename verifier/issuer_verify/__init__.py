"""issuer-verify: what a resource server installs to accept the issuer's access tokens.

::

    from issuer_verify import InvalidToken, RedisDenylist, Verifier

    verifier = Verifier(issuer="https://auth.example", audience="https://api.example",
                        denylist=RedisDenylist("redis://...", prefix="issuer:"))  # denylist optional
    claims = verifier.verify(token)            # or: await verifier.verify_async(token)

Modules: :mod:`issuer_verify.core` (the verifier: RFC 9068 tokens checked locally against the
JWKS), :mod:`issuer_verify.denylist` (the local copy of the issuer's denylist and its two feeds),
:mod:`issuer_verify.wire` (the denylist's wire format, shared with the issuer),
:mod:`issuer_verify.redis_conn` (Redis URLs: one server, Sentinel, Cluster; the ``[redis]``
extra) and :mod:`issuer_verify.litestar` (a bearer-token guard; the ``[litestar]`` extra).

Runtime dependencies: cryptography, PyJWT and httpx; nothing of the issuer server.
"""

from issuer_verify.core import REASONS, SUPPORTED_ALGORITHMS, InvalidToken, Verifier
from issuer_verify.denylist import Denylist, FeedDenylist, RedisDenylist

__version__ = "0.1.0"

__all__ = [
    "REASONS",
    "SUPPORTED_ALGORITHMS",
    "Denylist",
    "FeedDenylist",
    "InvalidToken",
    "RedisDenylist",
    "Verifier",
    "__version__",
]
