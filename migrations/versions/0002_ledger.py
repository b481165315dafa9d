"""Ledger: accounts, transactions, lines, holds.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_SIDE = sa.Enum("debit", "credit", name="side", native_enum=False, length=8)


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", _PK, nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "card_float",
                "resident_account",
                "merchant_pending",
                "merchant_payable",
                "biller_payable",
                "fee_income",
                "counter_cash",
                "bank",
                "suspense_gray",
                "suspense_short",
                "suspense_bank",
                "refund_clearing",
                name="accountkind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("owner_ref", sa.String(length=64), nullable=False),
        sa.Column("normal_side", _SIDE, nullable=False),
        sa.Column("may_go_negative", sa.Boolean(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("held >= 0", name=op.f("ck_ledger_accounts_held_not_negative")),
        sa.CheckConstraint(
            "may_go_negative OR balance >= 0", name=op.f("ck_ledger_accounts_no_forbidden_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("kind", "owner_ref", name=op.f("uq_ledger_accounts_kind_owner_ref")),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", _PK, nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("tx_type", sa.String(length=32), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("record_ref", sa.String(length=128), nullable=True),
        sa.Column("reverses_id", _PK, nullable=True),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transactions_amount_positive")),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_transactions_reverses_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_transactions_idempotency_key")),
        sa.UniqueConstraint("reverses_id", name=op.f("uq_ledger_transactions_reverses_id")),
    )
    op.create_index(
        op.f("ix_ledger_transactions_clearing_date"), "ledger_transactions", ["clearing_date"]
    )
    op.create_index(op.f("ix_ledger_transactions_posted_at"), "ledger_transactions", ["posted_at"])
    op.create_index(
        op.f("ix_ledger_transactions_record_ref"), "ledger_transactions", ["record_ref"]
    )
    op.create_table(
        "ledger_holds",
        sa.Column("id", _PK, nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", _PK, nullable=False),
        sa.Column("counterparty_id", _PK, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "posted",
                "voided",
                "expired",
                name="holdstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_amount", sa.BigInteger(), nullable=True),
        sa.Column("transaction_id", _PK, nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_holds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_holds_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["counterparty_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_holds_counterparty_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_holds_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_holds")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_holds_idempotency_key")),
    )
    op.create_index(op.f("ix_ledger_holds_account_id"), "ledger_holds", ["account_id"])
    op.create_index("ix_ledger_holds_status_expires_at", "ledger_holds", ["status", "expires_at"])
    op.create_table(
        "ledger_lines",
        sa.Column("id", _PK, nullable=False),
        sa.Column("transaction_id", _PK, nullable=False),
        sa.Column("account_id", _PK, nullable=False),
        sa.Column("side", _SIDE, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_lines_amount_positive")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_lines_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_lines_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_lines")),
    )
    op.create_index(
        "ix_ledger_lines_account_id_transaction_id",
        "ledger_lines",
        ["account_id", "transaction_id"],
    )
    op.create_index(op.f("ix_ledger_lines_transaction_id"), "ledger_lines", ["transaction_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_ledger_lines_transaction_id"), table_name="ledger_lines")
    op.drop_index("ix_ledger_lines_account_id_transaction_id", table_name="ledger_lines")
    op.drop_table("ledger_lines")
    op.drop_index("ix_ledger_holds_status_expires_at", table_name="ledger_holds")
    op.drop_index(op.f("ix_ledger_holds_account_id"), table_name="ledger_holds")
    op.drop_table("ledger_holds")
    op.drop_index(op.f("ix_ledger_transactions_record_ref"), table_name="ledger_transactions")
    op.drop_index(op.f("ix_ledger_transactions_posted_at"), table_name="ledger_transactions")
    op.drop_index(op.f("ix_ledger_transactions_clearing_date"), table_name="ledger_transactions")
    op.drop_table("ledger_transactions")
    op.drop_table("ledger_accounts")
