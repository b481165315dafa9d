"""Bill payments and their outbox: each payment of a utility bill (its serial towards the
biller, who pays, the held money, its state) and what is still to be sent to the biller for it.

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bill_payments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("serial", sa.String(length=32), nullable=True),
        sa.Column(
            "sub_channel",
            sa.Enum("online", "kiosk", "counter", name="subchannel", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "biller_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("biller_code", sa.String(length=16), nullable=False),
        sa.Column("bill_key", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("bill_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=6), nullable=True),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column(
            "payer_kind",
            sa.Enum(
                "resident_account", "counter_cash", name="payerkind", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column(
            "resident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("card_no", sa.String(length=16), nullable=True),
        sa.Column("terminal_no", sa.String(length=16), nullable=True),
        sa.Column("counter_code", sa.String(length=16), nullable=True),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("cash_tx_id", sa.BigInteger(), nullable=True),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "unknown",
                "biller_pending",
                "reversing",
                "refunding",
                "paid",
                "failed",
                "reversed",
                "refunded",
                name="paymentstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("receipt_no", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.Column("pay_tx_id", sa.BigInteger(), nullable=True),
        sa.Column("posted_date", sa.Date(), nullable=True),
        sa.Column("refund_serial", sa.String(length=32), nullable=True),
        sa.Column("refund_receipt_no", sa.String(length=64), nullable=True),
        sa.Column("refund_tx_id", sa.BigInteger(), nullable=True),
        sa.Column("refund_date", sa.Date(), nullable=True),
        sa.Column("cash_returned_tx_id", sa.BigInteger(), nullable=True),
        sa.Column("cash_returned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submit_scope", sa.String(length=40), nullable=False),
        sa.Column("submit_key", sa.String(length=96), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("biller_pending_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_bill_payments_amount_positive")),
        sa.ForeignKeyConstraint(
            ["biller_id"], ["billers.id"], name=op.f("fk_bill_payments_biller_id_billers")
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_bill_payments_resident_id_residents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bill_payments")),
        sa.UniqueConstraint("refund_serial", name=op.f("uq_bill_payments_refund_serial")),
        sa.UniqueConstraint("serial", name=op.f("uq_bill_payments_serial")),
        sa.UniqueConstraint(
            "submit_scope", "submit_key", name=op.f("uq_bill_payments_submit_scope_submit_key")
        ),
    )
    with op.batch_alter_table("bill_payments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bill_payments_biller_date", ["biller_code", "clearing_date"], unique=False
        )
        batch_op.create_index(
            "ix_bill_payments_biller_posted", ["biller_code", "posted_date"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_bill_payments_resident_id"), ["resident_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_bill_payments_status"), ["status"], unique=False)

    op.create_table(
        "bill_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "action",
            sa.Enum(
                "pay",
                "status",
                "reverse",
                "refund",
                name="outboxaction",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["bill_payments.id"],
            name=op.f("fk_bill_outbox_payment_id_bill_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bill_outbox")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_bill_outbox_payment_id")),
    )
    with op.batch_alter_table("bill_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bill_outbox_next_attempt_at"), ["next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("bill_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bill_outbox_next_attempt_at"))

    op.drop_table("bill_outbox")
    with op.batch_alter_table("bill_payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bill_payments_status"))
        batch_op.drop_index(batch_op.f("ix_bill_payments_resident_id"))
        batch_op.drop_index("ix_bill_payments_biller_posted")
        batch_op.drop_index("ix_bill_payments_biller_date")

    op.drop_table("bill_payments")
