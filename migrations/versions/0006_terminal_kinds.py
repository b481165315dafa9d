"""Terminal kinds: what a terminal may ask of the host (only counters and kiosks load purses).

Existing terminals become ``pos`` (the kind with the rights every terminal had before), except
those that have already loaded purses: ``counter`` where any load took cash, else ``kiosk``.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KIND = sa.Enum(
    "validator", "pos", "kiosk", "counter", name="terminalkind", native_enum=False, length=16
)


def upgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.add_column(sa.Column("kind", _KIND, nullable=False, server_default="pos"))
    op.execute(
        "UPDATE terminals SET kind = 'kiosk' "
        "WHERE id IN (SELECT terminal_id FROM purse_loads WHERE source = 'account')"
    )
    op.execute(
        "UPDATE terminals SET kind = 'counter' "
        "WHERE id IN (SELECT terminal_id FROM purse_loads WHERE source = 'cash')"
    )
    # The default only filled the existing rows: every new terminal is registered with its kind.
    with op.batch_alter_table("terminals") as batch:
        batch.alter_column("kind", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.drop_column("kind")
