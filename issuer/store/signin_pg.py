"""PostgreSQL fast path of the authorization-code exchange: the winner's writes as one statement.

:meth:`issuer.store.signin.CodeStore.exchange` on PostgreSQL sends the whole exchange of a code
whose every binding holds (RFC 6749 4.1.3, RFC 7636 4.6) as one self-committing statement
(:data:`_EXCHANGE`) on the asyncpg connection underneath a pooled connection
(:func:`issuer.store.refresh_pg.driver_connection`: same pool, same limits, no SQLAlchemy
execution layer, no ``BEGIN``/``COMMIT`` round trips; the text is fixed, so asyncpg keeps it
prepared per connection). It either commits all of an exchange (the code spent, the family id
recorded on it, the refresh family and its first token) or writes nothing; when it writes
nothing the caller (:mod:`issuer.grants.authorization_code`) takes the transactional path
unchanged, which spends the code and classifies the presentation (unknown, replayed, expired,
another client, another redirect URI, a wrong verifier, an ended sign-in, a disabled user) as
before. The rules are those of that path, check for check:

* ``bound`` reads the code only if it is unused and unexpired (``CodeStore.spend``'s condition)
  and every binding the transactional path checks after the spend holds (``_refusal``, in its
  order): issued to this client; its redirect URI the expected one (the caller passes the
  presented ``redirect_uri``, or the one registered URI when it was left out, and skips this
  path when neither applies); its PKCE challenge the S256 of the presented verifier (computed
  and syntax-checked by the caller: a well-formed verifier matches exactly when
  ``pkce.verify`` says so); its browser session not ended and neither idle- nor absolutely
  expired (``StoredSession.live_at``), read ``FOR SHARE`` (below); its user there and not
  disabled;
* ``spent`` spends the code by ``UPDATE ... WHERE used_at IS NULL``: under concurrent exchanges
  the row lock lets exactly one ``UPDATE`` match (the others re-check the condition on the
  winner's row version, match nothing and write nothing; their transactional path then finds
  the code spent, a replay, and revokes what the winner issued), and records the family id
  for a replay to revoke;
* ``family`` and ``token`` start the login when the client has the refresh grant (a token digest
  is passed): the family (scope of the code, absolute expiry ``now + absolute_ttl``, the browser
  session) and its first token (idle expiry, never past the family's), as
  :meth:`issuer.store.refresh.RefreshStore.start_family` writes them. They read ``spent``, so a
  code not spent by this statement starts nothing.

The browser session's row is locked ``FOR SHARE`` until the statement commits, as the
transactional path's read of it is (``SessionStore.by_id(..., lock=True)``), so that an exchange
and a logout of that session (``RevocationService.end_browser_session``: the session's ``UPDATE``,
then its families, in one transaction) never miss each other: a logout that has begun makes the
exchange wait and then re-check the row (ended: nothing is written, and the transactional path
refuses); an exchange that has begun makes the logout's ``UPDATE`` wait, and the logout's read of
the families, a later statement, then finds the new family and revokes it. Without the lock an
exchange could read the session live just before a logout and commit just after the logout read
the families: a login left alive in a session that was logged out.

Each row is reached by its key (the code by its digest, its session by ``id = (SELECT session_id
...)``, the user by a correlated subquery on its primary key, the spent code by ``digest =
(SELECT digest FROM bound)``), so that the plan PostgreSQL settles on for the prepared statement
reads indexes even on tables without statistics; the join to the session stays, for its
``FOR SHARE`` lock (as in :mod:`issuer.store.refresh_pg`; ``tests/store/test_pg_plans.py``).

A comparison of the challenge in SQL is not constant-time; what it could leak is how much of a
stored challenge a chosen verifier's SHA-256 matches, which gives no way to a preimage.
"""

from __future__ import annotations

from typing import Any

from issuer.store.database import Database
from issuer.store.refresh_pg import driver_connection

__all__ = ["exchange"]

# $1 now, $2 code digest, $3 client_id, $4 expected redirect URI, $5 S256 of the verifier,
# $6 family id, $7 first refresh token's digest or NULL (no refresh grant), $8 idle ttl,
# $9 absolute ttl
_EXCHANGE = """
WITH bound AS (
    SELECT a.digest FROM authorization_codes AS a JOIN browser_sessions AS s ON s.id = a.session_id
    WHERE a.digest = $2::bytea AND a.used_at IS NULL AND a.expires_at > $1::bigint
      AND a.client_id = $3::varchar AND a.redirect_uri = $4::text AND a.code_challenge = $5::varchar
      AND s.id = (SELECT c.session_id FROM authorization_codes AS c WHERE c.digest = $2::bytea)
      AND s.ended_at IS NULL AND s.idle_expires_at > $1::bigint AND s.expires_at > $1::bigint
      AND (SELECT u.id FROM users AS u WHERE u.id = a.subject AND u.disabled_at IS NULL) IS NOT NULL
    FOR SHARE OF s
), spent AS (
    UPDATE authorization_codes AS a SET used_at = $1::bigint, family_id = $6::varchar
    WHERE a.digest = (SELECT digest FROM bound) AND a.used_at IS NULL AND a.expires_at > $1::bigint
    RETURNING a.digest, a.client_id, a.redirect_uri, a.code_challenge, a.scope, a.nonce,
              a.session_id, a.subject, a.auth_time, a.created_at, a.expires_at, a.used_at, a.family_id
), family AS (
    INSERT INTO refresh_families
        (id, client_id, subject, scope, created_at, expires_at, last_used_at, browser_session_id)
    SELECT $6::varchar, spent.client_id, spent.subject, spent.scope, $1::bigint,
           $1::bigint + $9::bigint, $1::bigint, spent.session_id
    FROM spent
    WHERE $7::bytea IS NOT NULL
    RETURNING id, client_id, scope, expires_at
), token AS (
    INSERT INTO refresh_tokens (digest, family_id, client_id, scope, issued_at, expires_at)
    SELECT $7::bytea, family.id, family.client_id, family.scope, $1::bigint,
           LEAST($1::bigint + $8::bigint, family.expires_at)
    FROM family
)
SELECT * FROM spent
"""


async def exchange(
    db: Database,
    *,
    digest: bytes,
    client_id: str,
    redirect_uri: str,
    challenge: str,
    family_id: str,
    refresh_digest: bytes | None,
    now: int,
    idle_ttl: int,
    absolute_ttl: int,
) -> Any:
    """The whole winning exchange, committed, in one round trip (see the module doc): the spent
    code's row (the columns of ``authorization_codes``), or None when it wrote nothing and the
    caller must take the transactional path."""
    async with driver_connection(db) as driver:
        return await driver.fetchrow(
            _EXCHANGE,
            now,
            digest,
            client_id,
            redirect_uri,
            challenge,
            family_id,
            refresh_digest,
            idle_ttl,
            absolute_ttl,
        )
