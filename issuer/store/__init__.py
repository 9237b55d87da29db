"""Persistence: the SQLModel tables, the engine, and one store per kind of record.

Every SQL statement of the server lives in this package; the rest of the server calls stores.
"""
