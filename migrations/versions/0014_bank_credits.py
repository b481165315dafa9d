"""Bank credits of online accounts: one row per (bank, bank reference), matched to an account or
held in suspense, and the proposal and approval that move a suspense credit to an account.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bank_credits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("bank_code", sa.String(length=16), nullable=False),
        sa.Column("bank_reference", sa.String(length=35), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "source",
            sa.Enum("notification", "file", name="creditsource", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("account_reference_given", sa.String(length=40), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("value_date", sa.Date(), nullable=False),
        sa.Column("payer_masked", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "posted", "suspense", "assigned", name="creditstatus", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("break_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "proposed_account_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("proposed_by", sa.String(length=64), nullable=True),
        sa.Column("assigned_by", sa.String(length=64), nullable=True),
        sa.Column("assign_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_bank_credits_amount_positive")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["online_accounts.id"],
            name=op.f("fk_bank_credits_account_id_online_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["proposed_account_id"],
            ["online_accounts.id"],
            name=op.f("fk_bank_credits_proposed_account_id_online_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_credits")),
        sa.UniqueConstraint(
            "bank_code", "bank_reference", name=op.f("uq_bank_credits_bank_code_bank_reference")
        ),
    )
    with op.batch_alter_table("bank_credits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bank_credits_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bank_credits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bank_credits_status"))

    op.drop_table("bank_credits")
