"""Balance releases keep their failures and their cash payouts; a chip carries one live card.

- ``card_balance_releases``: ``failures``, ``last_error``, ``last_attempt_at`` (a release that
  failed is kept and retried, the others go on); ``paid_out_at``, ``paid_out_by``,
  ``payout_counter``, ``payout_transaction_id`` (a cash refund is owed to the holder until a
  counter pays it out);
- ``cards``: unique chip serial among live cards (personalizing, active, lost, frozen); existing
  duplicates stop the upgrade with their card ids.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE_CHIP = sa.text(
    "chip_serial IS NOT NULL AND status IN ('personalizing', 'active', 'lost', 'frozen')"
)


def upgrade() -> None:
    shared = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT chip_serial, min(id), max(id) FROM cards WHERE chip_serial IS NOT NULL "
                "AND status IN ('personalizing', 'active', 'lost', 'frozen') "
                "GROUP BY chip_serial HAVING count(*) > 1"
            )
        )
        .all()
    )
    if shared:
        raise RuntimeError(
            "live cards share a chip serial; settle which card the chip carries first: "
            f"{sorted(tuple(r) for r in shared)}"
        )
    with op.batch_alter_table("card_balance_releases") as batch:
        batch.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.String(200), nullable=True))
        batch.add_column(sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("paid_out_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("paid_out_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("payout_counter", sa.String(32), nullable=True))
        batch.add_column(sa.Column("payout_transaction_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("card_balance_releases") as batch:
        batch.alter_column("failures", existing_type=sa.Integer(), server_default=None)
    op.create_index(
        "uq_cards_live_chip_serial",
        "cards",
        ["chip_serial"],
        unique=True,
        postgresql_where=_LIVE_CHIP,
        sqlite_where=_LIVE_CHIP,
    )


def downgrade() -> None:
    op.drop_index("uq_cards_live_chip_serial", table_name="cards")
    with op.batch_alter_table("card_balance_releases") as batch:
        for name in (
            "payout_transaction_id", "payout_counter", "paid_out_by", "paid_out_at",
            "last_attempt_at", "last_error", "failures",
        ):  # fmt: skip
            batch.drop_column(name)
