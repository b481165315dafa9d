"""Nothing in clear rebuilds a resident ID: the stored mask keeps the first 3 and the last 4
characters (it kept the 6 region digits), and the birth date, which with the region and the last
characters left only a handful of candidates, is dropped (it stays in the ID's ciphertext).

Existing masks are narrowed in place: the old mask holds the characters the new one keeps.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    residents = sa.table(
        "residents", sa.column("id", sa.Integer), sa.column("id_masked", sa.String)
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(residents.c.id, residents.c.id_masked)).all()
    for row_id, masked in rows:
        narrowed = masked[:3] + "*" * 11 + masked[14:] if len(masked) == 18 else "*" * len(masked)
        connection.execute(
            residents.update().where(residents.c.id == row_id).values(id_masked=narrowed)
        )
    with op.batch_alter_table("residents") as batch:
        batch.drop_column("birth_date")


def downgrade() -> None:
    # The birth dates are not restored (they are only in the ciphertext): earlier code reads this
    # placeholder until the rows are registered again.
    with op.batch_alter_table("residents") as batch:
        batch.add_column(
            sa.Column("birth_date", sa.Date(), nullable=False, server_default="1900-01-01")
        )
