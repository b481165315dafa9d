"""The resident's online account: its reference and PIN verification data, cash moved in and out
at counters, and the PIN key of each terminal session.

Accounts are opened on first use (a deposit, a PIN, a lookup), so existing residents need no row
yet; sessions opened before have no PIN key (their terminals sign in again for one).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "online_accounts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "resident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("reference", sa.String(length=14), nullable=True),
        sa.Column("pin_offset", sa.String(length=12), nullable=True),
        sa.Column("pin_pvk_version", sa.Integer(), nullable=True),
        sa.Column("pin_set_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pin_failures", sa.Integer(), nullable=False),
        sa.Column("pin_locked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "pin_failures >= 0", name=op.f("ck_online_accounts_pin_failures_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_online_accounts_resident_id_residents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_online_accounts")),
        sa.UniqueConstraint("reference", name=op.f("uq_online_accounts_reference")),
        sa.UniqueConstraint("resident_id", name=op.f("uq_online_accounts_resident_id")),
    )
    op.create_table(
        "account_movements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("deposit", "withdrawal", name="movementkind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("counter_code", sa.String(length=16), nullable=False),
        sa.Column("receipt_no", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "posted",
                "awaiting_approval",
                "rejected",
                "expired",
                name="movementstatus",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("card_no", sa.String(length=16), nullable=True),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("approver", sa.String(length=64), nullable=True),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_account_movements_amount_positive")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["online_accounts.id"],
            name=op.f("fk_account_movements_account_id_online_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_movements")),
        sa.UniqueConstraint(
            "kind",
            "counter_code",
            "receipt_no",
            name=op.f("uq_account_movements_kind_counter_code_receipt_no"),
        ),
    )
    with op.batch_alter_table("account_movements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_account_movements_account_id"), ["account_id"], unique=False
        )

    with op.batch_alter_table("terminal_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pin_key_blob", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("terminal_sessions", schema=None) as batch_op:
        batch_op.drop_column("pin_key_blob")

    with op.batch_alter_table("account_movements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_movements_account_id"))

    op.drop_table("account_movements")
    op.drop_table("online_accounts")
