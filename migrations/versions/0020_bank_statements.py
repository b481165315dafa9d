"""Bank statements imported by finance and their lines, each with how it matched the payouts.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "bank_statements",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("account", sa.String(length=34), nullable=False),
        sa.Column("statement_id", sa.String(length=35), nullable=False),
        sa.Column(
            "format",
            sa.Enum("csv", "camt053", name="format", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("opening_balance", sa.BigInteger(), nullable=True),
        sa.Column("closing_balance", sa.BigInteger(), nullable=True),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("debits", sa.BigInteger(), nullable=False),
        sa.Column("first_booking", sa.Date(), nullable=True),
        sa.Column("last_booking", sa.Date(), nullable=True),
        sa.Column("imported_by", sa.String(length=64), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_statements")),
        sa.UniqueConstraint(
            "account", "statement_id", name=op.f("uq_bank_statements_account_statement_id")
        ),
        sa.UniqueConstraint("sha256", name=op.f("uq_bank_statements_sha256")),
    )
    op.create_table(
        "bank_statement_lines",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("statement_id", BIGINT_PK, nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("booking_date", sa.Date(), nullable=False),
        sa.Column("value_date", sa.Date(), nullable=True),
        sa.Column(
            "direction",
            sa.Enum("credit", "debit", name="direction", native_enum=False, length=8),
            nullable=False,
        ),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("bank_reference", sa.String(length=64), nullable=True),
        sa.Column("counterparty_account", sa.String(length=34), nullable=True),
        sa.Column("counterparty_name", sa.String(length=140), nullable=True),
        sa.Column("remittance", sa.String(length=140), nullable=True),
        sa.Column(
            "match",
            sa.Enum(
                "matched",
                "unmatched",
                "differs",
                "pending",
                name="matchstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("match_detail", sa.String(length=200), nullable=True),
        sa.Column("break_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_bank_statement_lines_amount_positive")),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["bank_statements.id"],
            name=op.f("fk_bank_statement_lines_statement_id_bank_statements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_statement_lines")),
        sa.UniqueConstraint(
            "statement_id", "line_no", name=op.f("uq_bank_statement_lines_statement_id_line_no")
        ),
    )
    op.create_index(
        op.f("ix_bank_statement_lines_reference"), "bank_statement_lines", ["reference"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_bank_statement_lines_reference"), table_name="bank_statement_lines")
    op.drop_table("bank_statement_lines")
    op.drop_table("bank_statements")
