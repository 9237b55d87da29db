"""The backend-for-frontend (BFF): web apps keep every token out of the browser.

The browser holds only an opaque session id in a ``__Host-`` HttpOnly Secure SameSite=Strict
cookie; the BFF, a confidential client of the issuer, signs the user in with the authorization
code flow + PKCE (RFC 6749 4.1, RFC 7636, OpenID Connect Core 3.1), keeps the session and its
tokens server-side (sealed with AES-GCM), refreshes them itself, and proxies the app's API calls
to an allowlist of upstreams with the access token attached (draft-ietf-oauth-browser-based-apps,
section 6.1). See docs/bff.md.

- :mod:`issuer.bff.settings`: the ``BFF_*`` settings.
- :mod:`issuer.bff.sessions`: session records, session ids and their digests, sealing.
- :mod:`issuer.bff.store`: the session store (the database; Redis and an in-process cache in front).
- :mod:`issuer.bff.invalidation`: with Redis, the pub/sub channel that keeps every instance's
  in-process cache exact.
- :mod:`issuer.bff.oidc`: the issuer client (metadata, code + PKCE, refresh, revocation, id_token).
- :mod:`issuer.bff.refresh`: single-flight refresh (per process, and across instances on Redis).
- :mod:`issuer.bff.redirects`: ``return_to``, same-origin paths only.
- :mod:`issuer.bff.runtime`: what one app holds while it runs; the session lookup.
- :mod:`issuer.bff.http`, :mod:`issuer.bff.proxy`, :mod:`issuer.bff.health`: the endpoints.
- :mod:`issuer.bff.metrics`: Prometheus counters of one app.
- :mod:`issuer.bff.app`: :func:`~issuer.bff.app.create_app` and the Litestar plugin.
"""
