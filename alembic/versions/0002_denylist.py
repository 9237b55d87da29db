"""denylist: the durable revocation list

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 21:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "denylist",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("exp", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("denylist", schema=None) as batch_op:
        batch_op.create_index("ix_denylist_kind_value", ["kind", "value"], unique=False)
        batch_op.create_index(batch_op.f("ix_denylist_exp"), ["exp"], unique=False)
        batch_op.create_index(batch_op.f("ix_denylist_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("denylist", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_denylist_created_at"))
        batch_op.drop_index(batch_op.f("ix_denylist_exp"))
        batch_op.drop_index("ix_denylist_kind_value")

    op.drop_table("denylist")
