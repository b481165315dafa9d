"""Resident self-service: each resident's online credential (argon2 password hash, lockout,
session version) and the one live activation code a counter issued (its HMAC only).

Rows are made when a counter first issues a code, so existing residents need none.

Revision ID: 0028
Revises: 0027
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resident_credentials",
        sa.Column("id", ID, nullable=False),
        sa.Column("resident_id", ID, nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("session_version", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=True),
        sa.Column("code_card_id", ID, nullable=True),
        sa.Column("code_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("code_failures", sa.Integer(), nullable=False),
        sa.Column("code_issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("code_issued_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "code_failures >= 0", name=op.f("ck_resident_credentials_code_failures_not_negative")
        ),
        sa.CheckConstraint(
            "failed_logins >= 0", name=op.f("ck_resident_credentials_failed_logins_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["code_card_id"], ["cards.id"], name=op.f("fk_resident_credentials_code_card_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_resident_credentials_resident_id_residents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resident_credentials")),
        sa.UniqueConstraint("resident_id", name=op.f("uq_resident_credentials_resident_id")),
    )


def downgrade() -> None:
    op.drop_table("resident_credentials")
