"""One serial space for online messages and loads; loads can be voided and age into breaks.

Purse loads claim their terminal serial among the online messages (``online_authorizations``
gains messages of kind ``load``: no schema change, the kind is a plain string). Here:

- ``purse_loads.aged_at``: when a load pending without card evidence opened its aged_load break;
- one MAC2 per card, online counter and host date-time (unique where a MAC2 was issued): two
  loads at one counter would otherwise share a TAC; existing duplicates stop the upgrade with
  their ids (a proof of either could confirm the wrong one: settle them first);
- an index for the ageing job (pending loads by age).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ISSUED = sa.text("host_datetime IS NOT NULL")


def upgrade() -> None:
    duplicates = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT min(id), max(id) FROM purse_loads WHERE host_datetime IS NOT NULL "
                "GROUP BY asn, online_counter, host_datetime HAVING count(*) > 1"
            )
        )
        .all()
    )
    if duplicates:
        raise RuntimeError(
            "purse loads share a card, online counter and host date-time (their TACs may be "
            f"equal); resolve them before upgrading: {sorted(tuple(r) for r in duplicates)}"
        )
    with op.batch_alter_table("purse_loads") as batch:
        batch.add_column(sa.Column("aged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "uq_purse_loads_asn_counter_host_datetime",
        "purse_loads",
        ["asn", "online_counter", "host_datetime"],
        unique=True,
        postgresql_where=_ISSUED,
        sqlite_where=_ISSUED,
    )
    op.create_index("ix_purse_loads_status_created_at", "purse_loads", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_purse_loads_status_created_at", table_name="purse_loads")
    op.drop_index("uq_purse_loads_asn_counter_host_datetime", table_name="purse_loads")
    with op.batch_alter_table("purse_loads") as batch:
        batch.drop_column("aged_at")
