"""Persistence: the SQLModel tables, the engine, and one store per kind of record.

Every SQL statement of the server lives in this package (the Alembic revisions aside); the rest
of the server calls stores. A store's methods take the :class:`~sqlalchemy.ext.asyncio.AsyncConnection`
of the caller's transaction, so that a caller composes several statements in one transaction
(:meth:`issuer.store.database.Database.transaction`), and return frozen dataclasses
(:mod:`issuer.store.rows`), never SQLAlchemy rows.

- :mod:`issuer.store.tables`: the schema, every column declared once.
- :mod:`issuer.store.database`: the engine, transactions, outages translated to 503.
- :mod:`issuer.store.clients`: :class:`~issuer.store.clients.ClientStore` (``StoredClient``).
- :mod:`issuer.store.users`: :class:`~issuer.store.users.UserStore` (``StoredUser``).
- :mod:`issuer.store.refresh`: :class:`~issuer.store.refresh.RefreshStore`, refresh families and
  tokens (``StoredFamily``, ``RefreshLookup``); the grants see it as a ``LoginStore``, revocation
  as a ``FamilyStore``; :mod:`issuer.store.refresh_pg` is its PostgreSQL one-statement rotation.
- :mod:`issuer.store.keys`: :class:`~issuer.store.keys.KeyStore`, the signing-key rows and the
  ring's lock (``KeyInfo``, ``SealedKey``, ``KeyState``).
- :mod:`issuer.store.denylist`: :class:`~issuer.store.denylist.DenylistStore`, the durable
  denylist (``StoredEntry``).
- :mod:`issuer.store.signin`: browser sign-in: :class:`~issuer.store.signin.SessionStore`
  (``StoredSession``), :class:`~issuer.store.signin.CodeStore` (``StoredCode``, spent by one
  conditional update), :class:`~issuer.store.signin.ConsentStore` (``StoredConsent``) and
  :class:`~issuer.store.signin.RequestStore` (``StoredRequest``, pending authorization requests
  read only with their browser's binding).
- :mod:`issuer.store.audit`: :class:`~issuer.store.audit.AuditStore`, the append-only audit trail
  (``StoredEvent``); :mod:`issuer.store.bounded` fits what it records to its columns.
"""
