"""browser sign-in: clients' redirect URIs, public and first-party clients, families'
browser session, pending authorization requests

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 20:13:24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "authorization_requests",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("binding_digest", sa.LargeBinary(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("prompt", sa.String(length=100), nullable=True),
        sa.Column("max_age", sa.BigInteger(), nullable=True),
        sa.Column("login_hint", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("authorization_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_authorization_requests_expires_at"), ["expires_at"], unique=False
        )

    with op.batch_alter_table("clients", schema=None) as batch_op:
        # Existing clients are confidential, third-party and have no redirect URI.
        batch_op.add_column(sa.Column("redirect_uris", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(
            sa.Column("post_logout_redirect_uris", sa.Text(), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("first_party", sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.add_column(sa.Column("browser_session_id", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_refresh_families_browser_session_id"), ["browser_session_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_families_browser_session_id"))
        batch_op.drop_column("browser_session_id")

    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("first_party")
        batch_op.drop_column("public")
        batch_op.drop_column("post_logout_redirect_uris")
        batch_op.drop_column("redirect_uris")

    with op.batch_alter_table("authorization_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_authorization_requests_expires_at"))

    op.drop_table("authorization_requests")
