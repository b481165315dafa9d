"""Terminals: registry, sessions, parameter lists, uploads, records, breaks; clearing days.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "clearing_days",
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("open", "closing", "closed", name="daystatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("clearing_date", name=op.f("pk_clearing_days")),
    )
    op.create_table(
        "merchants",
        sa.Column("id", _PK, nullable=False),
        sa.Column("merchant_no", sa.String(length=15), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "category",
            sa.Enum(
                "bus",
                "taxi",
                "parking",
                "fuel",
                "retail",
                "utility",
                name="merchantcategory",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("settlement_account", sa.String(length=34), nullable=False),
        sa.Column(
            "status",
            sa.Enum("active", "suspended", name="merchantstatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants")),
        sa.UniqueConstraint("merchant_no", name=op.f("uq_merchants_merchant_no")),
    )
    op.create_table(
        "terminal_parameter_changes",
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("table_name", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action IN ('set', 'delete')", name=op.f("ck_terminal_parameter_changes_action")
        ),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_terminal_parameter_changes")),
    )
    op.create_table(
        "terminal_parameters",
        sa.Column("table_name", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("table_name", "key", name=op.f("pk_terminal_parameters")),
    )
    op.create_table(
        "terminals",
        sa.Column("id", _PK, nullable=False),
        sa.Column("terminal_no", sa.String(length=12), nullable=False),
        sa.Column("psam_no", sa.String(length=20), nullable=False),
        sa.Column("merchant_id", _PK, nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "suspended",
                "retired",
                name="terminalstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("description", sa.String(length=100), nullable=False),
        sa.Column("blacklist_version", sa.BigInteger(), nullable=False),
        sa.Column("params_version", sa.BigInteger(), nullable=False),
        sa.Column("versions_reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sign_in_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_terminals_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminals")),
        sa.UniqueConstraint("psam_no", name=op.f("uq_terminals_psam_no")),
        sa.UniqueConstraint("terminal_no", name=op.f("uq_terminals_terminal_no")),
    )
    op.create_index(op.f("ix_terminals_merchant_id"), "terminals", ["merchant_id"], unique=False)
    op.create_table(
        "terminal_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("terminal_id", _PK, nullable=False),
        sa.Column("key_blob", sa.LargeBinary(), nullable=False),
        sa.Column("key_kcv", sa.String(length=6), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_terminal_sessions_terminal_id_terminals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminal_sessions")),
    )
    op.create_index(
        op.f("ix_terminal_sessions_expires_at"), "terminal_sessions", ["expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_terminal_sessions_terminal_id"), "terminal_sessions", ["terminal_id"], unique=False
    )
    op.create_table(
        "upload_batches",
        sa.Column("id", _PK, nullable=False),
        sa.Column("terminal_id", _PK, nullable=False),
        sa.Column("merchant_id", _PK, nullable=False),
        sa.Column("batch_no", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("total_amount", sa.BigInteger(), nullable=False),
        sa.Column("accepted_count", sa.Integer(), nullable=False),
        sa.Column("accepted_amount", sa.BigInteger(), nullable=False),
        sa.Column("refused_count", sa.Integer(), nullable=False),
        sa.Column("refused_amount", sa.BigInteger(), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("blacklist_version", sa.BigInteger(), nullable=False),
        sa.Column("params_version", sa.BigInteger(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_upload_batches_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"], ["terminals.id"], name=op.f("fk_upload_batches_terminal_id_terminals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_batches")),
        sa.UniqueConstraint(
            "terminal_id", "batch_no", name=op.f("uq_upload_batches_terminal_id_batch_no")
        ),
    )
    op.create_index(
        op.f("ix_upload_batches_clearing_date"), "upload_batches", ["clearing_date"], unique=False
    )
    op.create_index(
        op.f("ix_upload_batches_merchant_id"), "upload_batches", ["merchant_id"], unique=False
    )
    op.create_table(
        "offline_records",
        sa.Column("id", _PK, nullable=False),
        sa.Column("batch_id", _PK, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("result_code", sa.String(length=2), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=True),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("uploading_terminal_id", sa.BigInteger(), nullable=False),
        sa.Column("asn", sa.String(length=16), nullable=True),
        sa.Column("card_id", sa.BigInteger(), nullable=True),
        sa.Column("card_type", sa.String(length=2), nullable=True),
        sa.Column("tx_type", sa.Integer(), nullable=True),
        sa.Column("offline_counter", sa.Integer(), nullable=True),
        sa.Column("balance_before", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("fare", sa.BigInteger(), nullable=True),
        sa.Column("terminal_no", sa.String(length=12), nullable=True),
        sa.Column("psam_no", sa.String(length=20), nullable=True),
        sa.Column("terminal_serial", sa.BigInteger(), nullable=True),
        sa.Column("tx_datetime", sa.String(length=14), nullable=True),
        sa.Column("tx_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("key_version", sa.Integer(), nullable=True),
        sa.Column("tac", sa.String(length=8), nullable=True),
        sa.Column("gray", sa.Boolean(), nullable=False),
        sa.Column("blacklisted", sa.Boolean(), nullable=False),
        sa.Column("compound", sa.JSON(), nullable=True),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.Column("clearing_date", sa.Date(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["upload_batches.id"],
            name=op.f("fk_offline_records_batch_id_upload_batches"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_records")),
    )
    op.create_index(
        "ix_offline_records_batch_id_position",
        "offline_records",
        ["batch_id", "position"],
        unique=False,
    )
    op.create_index(
        "ix_offline_records_clearing_date_merchant_id",
        "offline_records",
        ["clearing_date", "merchant_id"],
        unique=False,
    )
    op.create_index(
        "uq_offline_records_asn_counter",
        "offline_records",
        ["asn", "offline_counter"],
        unique=True,
        postgresql_where=sa.text("result_code IN ('00', '10')"),
        sqlite_where=sa.text("result_code IN ('00', '10')"),
    )
    op.create_index(
        "uq_offline_records_terminal_serial",
        "offline_records",
        ["terminal_no", "terminal_serial"],
        unique=True,
        postgresql_where=sa.text("result_code IN ('00', '10')"),
        sqlite_where=sa.text("result_code IN ('00', '10')"),
    )
    op.create_table(
        "break_items",
        sa.Column("id", _PK, nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "counter_gap", "gray", "tac_failed", name="breakkind", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("asn", sa.String(length=16), nullable=False),
        sa.Column("counter", sa.Integer(), nullable=False),
        sa.Column("record_id", _PK, nullable=True),
        sa.Column(
            "status",
            sa.Enum("open", "resolved", name="breakstatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("detail", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["offline_records.id"],
            name=op.f("fk_break_items_record_id_offline_records"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_items")),
    )
    op.create_index("ix_break_items_asn_counter", "break_items", ["asn", "counter"], unique=False)
    op.create_index(op.f("ix_break_items_status"), "break_items", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_break_items_status"), table_name="break_items")
    op.drop_index("ix_break_items_asn_counter", table_name="break_items")
    op.drop_table("break_items")
    op.drop_index(
        "uq_offline_records_terminal_serial",
        table_name="offline_records",
        postgresql_where=sa.text("result_code IN ('00', '10')"),
        sqlite_where=sa.text("result_code IN ('00', '10')"),
    )
    op.drop_index(
        "uq_offline_records_asn_counter",
        table_name="offline_records",
        postgresql_where=sa.text("result_code IN ('00', '10')"),
        sqlite_where=sa.text("result_code IN ('00', '10')"),
    )
    op.drop_index("ix_offline_records_clearing_date_merchant_id", table_name="offline_records")
    op.drop_index("ix_offline_records_batch_id_position", table_name="offline_records")
    op.drop_table("offline_records")
    op.drop_index(op.f("ix_upload_batches_merchant_id"), table_name="upload_batches")
    op.drop_index(op.f("ix_upload_batches_clearing_date"), table_name="upload_batches")
    op.drop_table("upload_batches")
    op.drop_index(op.f("ix_terminal_sessions_terminal_id"), table_name="terminal_sessions")
    op.drop_index(op.f("ix_terminal_sessions_expires_at"), table_name="terminal_sessions")
    op.drop_table("terminal_sessions")
    op.drop_index(op.f("ix_terminals_merchant_id"), table_name="terminals")
    op.drop_table("terminals")
    op.drop_table("terminal_parameters")
    op.drop_table("terminal_parameter_changes")
    op.drop_table("merchants")
    op.drop_table("clearing_days")
