"""The BFF as a confidential client of the issuer: authorization code + PKCE, refresh,
revocation, and id_token validation (RFC 6749 4.1 and 6, RFC 7636, RFC 7009, RFC 8414, OpenID
Connect Core 3.1.3.7).

Everything goes through one shared :class:`httpx.AsyncClient` (timeouts set by the app). The
issuer's metadata is read once (``/.well-known/openid-configuration``, else the RFC 8414
document) and its ``issuer`` must be ``BFF_ISSUER_URL`` (RFC 8414 3.3); endpoints the document
does not list fall back to the issuer's fixed paths (``/authorize``, ``/logout``). The id_token is
checked with PyJWT against the issuer's JWKS, fetched with httpx (PyJWT's own ``PyJWKClient`` is
blocking) and refetched for an unknown ``kid`` at most every :data:`JWKS_REFETCH` seconds.

Client authentication is ``client_secret_basic``: id and secret form-urlencoded, then Basic
(RFC 6749 2.3.1). No token is ever logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx
import jwt

from issuer.bff.settings import BffSettings

__all__ = [
    "ID_TOKEN_ALGORITHMS",
    "Endpoints",
    "IssuerClient",
    "IssuerUnavailable",
    "LoginFailed",
    "RefreshRejected",
    "TokenAnswer",
]

log = logging.getLogger("issuer.bff")

ID_TOKEN_ALGORITHMS = ("ES256", "RS256", "EdDSA")  # what the issuer's key ring signs with
JWKS_REFETCH = 30.0
LEEWAY = 30  # seconds of clock skew allowed on exp/iat


class IssuerUnavailable(Exception):
    """The issuer could not be reached or answered with a server error (the browser gets 502)."""


class LoginFailed(Exception):
    """The callback cannot complete the login (the browser gets 400); the message is safe to show."""


class RefreshRejected(Exception):
    """The issuer refused the refresh token (``invalid_grant``): the session has ended."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    issuer: str
    authorization: str
    token: str
    revocation: str | None
    end_session: str | None
    jwks_uri: str
    iss_parameter: bool = False  # RFC 9207: the issuer sends iss with every authorization response


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """A successful RFC 6749 5.1 answer."""

    access_token: str
    expires_at: int
    refresh_token: str | None
    id_token: str | None


class IssuerClient:
    def __init__(self, settings: BffSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self.redirect_uri = settings.url + "/bff/callback"
        self._endpoints: Endpoints | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched_at = -JWKS_REFETCH

    @property
    def _auth(self) -> httpx.BasicAuth:
        # RFC 6749 2.3.1: the client id and secret are form-urlencoded before Basic encoding.
        return httpx.BasicAuth(quote_plus(self.settings.client_id), quote_plus(self.settings.client_secret))

    async def _get_json(self, url: str) -> Any:
        try:
            response = await self.http.get(url, headers={"accept": "application/json"})
        except httpx.HTTPError as error:
            raise IssuerUnavailable(f"GET {url}: {type(error).__name__}") from None
        if response.status_code != 200:
            raise IssuerUnavailable(f"GET {url}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise IssuerUnavailable(f"GET {url}: not JSON") from None

    async def endpoints(self) -> Endpoints:
        """The issuer's metadata, read once (an unreachable issuer is retried on the next call)."""
        if self._endpoints is not None:
            return self._endpoints
        base = self.settings.issuer_url
        document: Any = None
        for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
            try:
                document = await self._get_json(base + path)
                break
            except IssuerUnavailable:
                continue
        if not isinstance(document, dict):
            raise IssuerUnavailable("the issuer's metadata could not be read")
        if document.get("issuer") != base:  # RFC 8414 3.3: MUST be identical
            raise IssuerUnavailable("the issuer's metadata names another issuer")

        def endpoint(name: str, default: str | None) -> str | None:
            value = document.get(name, default)
            return value if isinstance(value, str) and value.startswith(("https://", "http://")) else default

        token = endpoint("token_endpoint", None)
        jwks_uri = endpoint("jwks_uri", None)
        if token is None or jwks_uri is None:
            raise IssuerUnavailable("the issuer's metadata has no token_endpoint or jwks_uri")
        self._endpoints = Endpoints(
            issuer=base,
            authorization=endpoint("authorization_endpoint", base + "/authorize") or base + "/authorize",
            token=token,
            revocation=endpoint("revocation_endpoint", None),
            end_session=endpoint("end_session_endpoint", base + "/logout"),
            jwks_uri=jwks_uri,
            iss_parameter=document.get("authorization_response_iss_parameter_supported") is True,
        )
        return self._endpoints

    async def authorization_url(self, *, state: str, nonce: str, challenge: str) -> str:
        endpoints = await self.endpoints()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": self.settings.scope,
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in endpoints.authorization else "?"
        return f"{endpoints.authorization}{separator}{query}"

    async def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        endpoints = await self.endpoints()
        try:
            response = await self.http.post(
                endpoints.token, data=form, auth=self._auth, headers={"accept": "application/json"}
            )
        except httpx.HTTPError as error:
            raise IssuerUnavailable(f"token endpoint: {type(error).__name__}") from None
        if response.status_code >= 500:
            raise IssuerUnavailable(f"token endpoint: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise IssuerUnavailable(f"token endpoint: HTTP {response.status_code}, not JSON") from None
        if not isinstance(body, dict):
            raise IssuerUnavailable("token endpoint: not a JSON object")
        return response.status_code, body

    @staticmethod
    def _answer(body: dict[str, Any], now: int) -> TokenAnswer:
        access = body.get("access_token")
        expires_in = body.get("expires_in")
        if not isinstance(access, str) or not access or str(body.get("token_type", "")).lower() != "bearer":
            raise IssuerUnavailable("token endpoint: no Bearer access_token in the answer")
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
            raise IssuerUnavailable("token endpoint: no expires_in in the answer")
        refresh = body.get("refresh_token")
        id_token = body.get("id_token")
        return TokenAnswer(
            access_token=access,
            expires_at=now + expires_in,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            id_token=id_token if isinstance(id_token, str) and id_token else None,
        )

    async def exchange(self, code: str, verifier: str) -> TokenAnswer:
        """RFC 6749 4.1.3 with the PKCE verifier (RFC 7636 4.5)."""
        now = int(time.time())
        status, body = await self._token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
            }
        )
        if status != 200:
            error = str(body.get("error"))
            log.warning("bff code exchange refused", extra={"status": status, "error": error})
            raise LoginFailed("the issuer refused the authorization code")
        return self._answer(body, now)

    async def refresh(self, refresh_token: str) -> TokenAnswer:
        """RFC 6749 6. ``invalid_grant`` (revoked, expired, reused family) is :class:`RefreshRejected`."""
        now = int(time.time())
        status, body = await self._token({"grant_type": "refresh_token", "refresh_token": refresh_token})
        if status == 200:
            return self._answer(body, now)
        error = str(body.get("error"))
        log.info("bff refresh refused", extra={"status": status, "error": error})
        if error in ("invalid_grant", "invalid_client", "unauthorized_client"):
            raise RefreshRejected(error)
        raise IssuerUnavailable(f"token endpoint: HTTP {status} {error}")

    async def revoke(self, token: str, hint: str = "refresh_token") -> bool:
        """RFC 7009 2.1; True when the issuer answered 200 (it does for unknown tokens too)."""
        endpoints = await self.endpoints()
        if endpoints.revocation is None:
            return False
        try:
            response = await self.http.post(
                endpoints.revocation, data={"token": token, "token_type_hint": hint}, auth=self._auth
            )
        except httpx.HTTPError as error:
            log.warning("bff revocation failed", extra={"error": type(error).__name__})
            return False
        if response.status_code != 200:
            log.warning("bff revocation refused", extra={"status": response.status_code})
        return response.status_code == 200

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is not None or time.monotonic() - self._keys_fetched_at < JWKS_REFETCH:
            return key
        endpoints = await self.endpoints()
        self._keys_fetched_at = time.monotonic()
        document = await self._get_json(endpoints.jwks_uri)
        try:
            keyset = jwt.PyJWKSet.from_dict(document)
        except jwt.PyJWTError:
            raise IssuerUnavailable("the issuer's JWKS holds no usable key") from None
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}
        return self._keys.get(kid)

    async def validate_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """OpenID Connect Core 3.1.3.7: signature by the issuer's key, ``iss``, ``aud`` (and
        ``azp``), ``exp``, ``iat``, ``sub`` and the ``nonce`` this login sent. Raises
        :class:`LoginFailed`."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise LoginFailed("the id_token is malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ID_TOKEN_ALGORITHMS or not isinstance(kid, str):
            raise LoginFailed("the id_token's algorithm or key id is not acceptable")
        key = await self._key(kid)
        if key is None:
            raise LoginFailed("the id_token is signed by an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=[alg],
                audience=self.settings.client_id,
                issuer=self.settings.issuer_url,
                leeway=LEEWAY,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.PyJWTError as error:
            raise LoginFailed(f"the id_token is not valid ({type(error).__name__})") from None
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.settings.client_id:
            raise LoginFailed("the id_token's azp is not this client")
        if not isinstance(claims.get("nonce"), str) or claims["nonce"] != nonce:  # 3.1.3.7 item 11
            raise LoginFailed("the id_token's nonce is not this login's")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise LoginFailed("the id_token has no subject")
        return claims
