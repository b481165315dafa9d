"""Online authorization and purse loads.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_CONFIRMED = "status = 'confirmed'"


def upgrade() -> None:
    op.create_table(
        "online_authorizations",
        sa.Column("id", _PK, nullable=False),
        sa.Column("terminal_id", sa.BigInteger(), nullable=False),
        sa.Column("terminal_no", sa.String(length=12), nullable=False),
        sa.Column("terminal_serial", sa.BigInteger(), nullable=False),
        sa.Column("merchant_no", sa.String(length=15), nullable=False),
        sa.Column("merchant_category", sa.String(length=16), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "purchase",
                "preauth",
                "completion",
                "reversal",
                "refund",
                "void",
                name="messagekind",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("asn", sa.String(length=16), nullable=True),
        sa.Column("card_no", sa.String(length=16), nullable=True),
        sa.Column("resident_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("approved_amount", sa.BigInteger(), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("response_code", sa.String(length=2), nullable=False),
        sa.Column("decline_reason", sa.String(length=64), nullable=True),
        sa.Column("auth_code", sa.String(length=6), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "declined",
                "approved",
                "held",
                "completed",
                "voided",
                "expired",
                "reversed",
                name="authstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("original_id", _PK, nullable=True),
        sa.Column("original_serial", sa.BigInteger(), nullable=True),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["original_id"],
            ["online_authorizations.id"],
            name=op.f("fk_online_authorizations_original_id_online_authorizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_online_authorizations")),
        sa.UniqueConstraint(
            "terminal_no",
            "terminal_serial",
            name=op.f("uq_online_authorizations_terminal_no_terminal_serial"),
        ),
    )
    op.create_index(
        "ix_online_authorizations_card_no_local_date",
        "online_authorizations",
        ["card_no", "local_date"],
    )
    op.create_index(
        "ix_online_authorizations_status_expires_at",
        "online_authorizations",
        ["status", "expires_at"],
    )
    op.create_table(
        "online_daily_usage",
        sa.Column("card_no", sa.String(length=16), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("card_no", "local_date", name=op.f("pk_online_daily_usage")),
    )
    op.create_table(
        "purse_loads",
        sa.Column("id", _PK, nullable=False),
        sa.Column("terminal_id", sa.BigInteger(), nullable=False),
        sa.Column("terminal_no", sa.String(length=12), nullable=False),
        sa.Column("terminal_serial", sa.BigInteger(), nullable=False),
        sa.Column("merchant_no", sa.String(length=15), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("asn", sa.String(length=16), nullable=False),
        sa.Column("card_no", sa.String(length=16), nullable=True),
        sa.Column("resident_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "source",
            sa.Enum("cash", "account", name="loadsource", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("source_ref", sa.String(length=32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_before", sa.BigInteger(), nullable=False),
        sa.Column("online_counter", sa.Integer(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("random", sa.String(length=8), nullable=False),
        sa.Column("mac1", sa.String(length=8), nullable=False),
        sa.Column("host_datetime", sa.String(length=14), nullable=True),
        sa.Column("mac2", sa.String(length=8), nullable=True),
        sa.Column("tac", sa.String(length=8), nullable=True),
        sa.Column("response_code", sa.String(length=2), nullable=False),
        sa.Column("decline_reason", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "declined",
                "pending",
                "confirmed",
                "refunded",
                name="loadstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "resolution",
            sa.Enum(
                "tac",
                "prove",
                "later_record",
                "superseded",
                name="resolution",
                native_enum=False,
                length=16,
            ),
            nullable=True,
        ),
        sa.Column("resolved_by_id", _PK, nullable=True),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("refund_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("clearing_date", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["resolved_by_id"],
            ["purse_loads.id"],
            name=op.f("fk_purse_loads_resolved_by_id_purse_loads"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purse_loads")),
        sa.UniqueConstraint(
            "terminal_no",
            "terminal_serial",
            name=op.f("uq_purse_loads_terminal_no_terminal_serial"),
        ),
    )
    op.create_index("ix_purse_loads_asn_status", "purse_loads", ["asn", "status"])
    op.create_index(
        "uq_purse_loads_confirmed_counter",
        "purse_loads",
        ["asn", "online_counter"],
        unique=True,
        postgresql_where=sa.text(_CONFIRMED),
        sqlite_where=sa.text(_CONFIRMED),
    )


def downgrade() -> None:
    op.drop_index("uq_purse_loads_confirmed_counter", table_name="purse_loads")
    op.drop_index("ix_purse_loads_asn_status", table_name="purse_loads")
    op.drop_table("purse_loads")
    op.drop_table("online_daily_usage")
    op.drop_index("ix_online_authorizations_status_expires_at", table_name="online_authorizations")
    op.drop_index("ix_online_authorizations_card_no_local_date", table_name="online_authorizations")
    op.drop_table("online_authorizations")
