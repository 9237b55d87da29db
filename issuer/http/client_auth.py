"""Client authentication at the token endpoint (RFC 6749 2.3.1): ``client_secret_basic`` and
``client_secret_post``, exactly one of them per request; a public client (``none``, RFC 6749 2.1)
sends only its ``client_id``. The credentials' syntax is checked
strictly (:mod:`issuer.http.edge`) before any lookup."""

from __future__ import annotations

from issuer.clients import ClientDirectory, ClientRecord
from issuer.errors import InvalidClient, InvalidRequest
from issuer.http.edge import check_client_id, parse_basic
from issuer.observability.logs import note_client

__all__ = ["AUTH_METHODS", "TOKEN_AUTH_METHODS", "authenticate_client"]

AUTH_METHODS = ("client_secret_basic", "client_secret_post")
# What the token endpoint accepts: the secret methods and, for public clients only, none.
TOKEN_AUTH_METHODS = (*AUTH_METHODS, "none")


async def authenticate_client(
    clients: ClientDirectory,
    header: str | None,
    form: dict[str, str],
    *,
    allow_public: bool = True,
) -> ClientRecord:
    """The client of a request whose (first) ``Authorization`` header is ``header``; pops
    ``client_id`` and ``client_secret`` from ``form``."""
    body_id = form.pop("client_id", None)
    body_secret = form.pop("client_secret", None)
    if header is not None and header[:6].lower() == "basic ":
        if body_secret is not None:
            # RFC 6749 2.3: the client MUST NOT use more than one authentication method.
            raise InvalidRequest("use one client authentication method, not two")
        client_id, secret = parse_basic(header)  # strict: issuer.http.edge
        if body_id is not None and body_id != client_id:
            raise InvalidRequest("client_id in the body differs from the authenticated client")
        client = await clients.authenticate(client_id, secret, basic=True)
        note_client(client.client_id)
        return client
    if header is not None:
        raise InvalidClient("unsupported authorization scheme", basic=True)
    if body_id is not None and body_secret is None and allow_public:
        # token_endpoint_auth_method none: only a client registered as public may do this.
        client = await clients.identify_public(check_client_id(body_id, basic=False))
        note_client(client.client_id)
        return client
    if body_id is None or body_secret is None:
        raise InvalidClient("client authentication required", basic=True)
    client = await clients.authenticate(check_client_id(body_id, basic=False), body_secret, basic=False)
    note_client(client.client_id)
    return client
