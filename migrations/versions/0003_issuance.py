"""Issuance: staff, residents, applications, cards, blacklist, audit, personalization jobs.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_entries_seq")),
    )
    op.create_index(op.f("ix_audit_entries_action"), "audit_entries", ["action"], unique=False)
    op.create_index(op.f("ix_audit_entries_actor"), "audit_entries", ["actor"], unique=False)
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "blacklist_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("asn", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("action IN ('add', 'remove')", name=op.f("ck_blacklist_changes_action")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blacklist_changes")),
        sa.UniqueConstraint("version", name=op.f("uq_blacklist_changes_version")),
    )
    op.create_index(op.f("ix_blacklist_changes_asn"), "blacklist_changes", ["asn"], unique=False)
    op.create_table(
        "blacklist_entries",
        sa.Column("asn", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("asn", name=op.f("pk_blacklist_entries")),
    )
    op.create_table(
        "card_number_sequences",
        sa.Column("city_code", sa.String(length=4), nullable=False),
        sa.Column("last_value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("city_code", name=op.f("pk_card_number_sequences")),
    )
    op.create_table(
        "list_versions",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_list_versions")),
    )
    op.create_table(
        "residents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("id_index", sa.String(length=64), nullable=False),
        sa.Column("id_cipher", sa.LargeBinary(), nullable=False),
        sa.Column("id_masked", sa.String(length=18), nullable=False),
        sa.Column("name_cipher", sa.LargeBinary(), nullable=False),
        sa.Column("name_masked", sa.String(length=64), nullable=False),
        sa.Column("sex", sa.String(length=1), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.CheckConstraint("sex IN ('M', 'F')", name=op.f("ck_residents_sex")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_residents")),
        sa.UniqueConstraint("id_index", name=op.f("uq_residents_id_index")),
    )
    op.create_table(
        "staff_users",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("roles", sa.String(length=255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_users")),
        sa.UniqueConstraint("username", name=op.f("uq_staff_users_username")),
    )
    op.create_table(
        "cards",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("card_no", sa.String(length=16), nullable=False),
        sa.Column("asn", sa.String(length=16), nullable=False),
        sa.Column(
            "resident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "card_type",
            sa.Enum(
                "standard",
                "student",
                "senior",
                "disabled",
                name="cardtype",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("concession_code", sa.String(length=2), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "personalizing",
                "active",
                "lost",
                "frozen",
                "replaced",
                "cancelled",
                "expired",
                name="cardstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("chip_serial", sa.String(length=16), nullable=True),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column(
            "replaced_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["replaced_by_id"], ["cards.id"], name=op.f("fk_cards_replaced_by_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_cards_resident_id_residents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cards")),
        sa.UniqueConstraint("asn", name=op.f("uq_cards_asn")),
        sa.UniqueConstraint("card_no", name=op.f("uq_cards_card_no")),
    )
    op.create_index(op.f("ix_cards_resident_id"), "cards", ["resident_id"], unique=False)
    op.create_index(
        "uq_cards_active_resident",
        "cards",
        ["resident_id"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "card_applications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "resident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "kind",
            sa.Enum("new", "replacement", name="applicationkind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("card_type", sa.String(length=16), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "submitted",
                "approved",
                "rejected",
                "in_production",
                "personalized",
                "issued",
                name="applicationstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("submitted_by", sa.String(length=64), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reject_reason", sa.String(length=255), nullable=True),
        sa.Column(
            "replaces_card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("issued_by", sa.String(length=64), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_card_applications_card_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["replaces_card_id"],
            ["cards.id"],
            name=op.f("fk_card_applications_replaces_card_id_cards"),
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_card_applications_resident_id_residents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_applications")),
    )
    op.create_index(
        op.f("ix_card_applications_resident_id"), "card_applications", ["resident_id"], unique=False
    )
    op.create_index(
        "uq_card_applications_open_resident",
        "card_applications",
        ["resident_id"],
        unique=True,
        postgresql_where=sa.text(
            "status IN ('submitted', 'approved', 'in_production', 'personalized')"
        ),
        sqlite_where=sa.text(
            "status IN ('submitted', 'approved', 'in_production', 'personalized')"
        ),
    )
    op.create_table(
        "card_balance_releases",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("replace", "cancel", name="releasekind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "replacement_application_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("refund_to", sa.String(length=32), nullable=True),
        sa.Column("refund_ref", sa.String(length=32), nullable=True),
        sa.Column(
            "status",
            sa.Enum("pending", "done", name="releasestatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_card_balance_releases_card_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["replacement_application_id"],
            ["card_applications.id"],
            name=op.f("fk_card_balance_releases_replacement_application_id_card_applications"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_balance_releases")),
        sa.UniqueConstraint("card_id", name=op.f("uq_card_balance_releases_card_id")),
    )
    op.create_index(
        op.f("ix_card_balance_releases_due_at"), "card_balance_releases", ["due_at"], unique=False
    )
    op.create_table(
        "perso_jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "application_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("card_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chip_serial", sa.String(length=16), nullable=False),
        sa.Column("reader", sa.String(length=128), nullable=False),
        sa.Column(
            "step",
            sa.Enum(
                "started",
                "session_opened",
                "keys_written",
                "files_written",
                "ended",
                "proved",
                name="persostep",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum("running", "failed", "done", name="persostatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("apdu_count", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["card_applications.id"],
            name=op.f("fk_perso_jobs_application_id_card_applications"),
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_perso_jobs_card_id_cards")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_perso_jobs")),
        sa.UniqueConstraint("application_id", name=op.f("uq_perso_jobs_application_id")),
    )


def downgrade() -> None:
    op.drop_table("perso_jobs")
    op.drop_index(op.f("ix_card_balance_releases_due_at"), table_name="card_balance_releases")
    op.drop_table("card_balance_releases")
    op.drop_index(
        "uq_card_applications_open_resident",
        table_name="card_applications",
        postgresql_where=sa.text(
            "status IN ('submitted', 'approved', 'in_production', 'personalized')"
        ),
        sqlite_where=sa.text(
            "status IN ('submitted', 'approved', 'in_production', 'personalized')"
        ),
    )
    op.drop_index(op.f("ix_card_applications_resident_id"), table_name="card_applications")
    op.drop_table("card_applications")
    op.drop_index(
        "uq_cards_active_resident",
        table_name="cards",
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )
    op.drop_index(op.f("ix_cards_resident_id"), table_name="cards")
    op.drop_table("cards")
    op.drop_table("staff_users")
    op.drop_table("residents")
    op.drop_table("list_versions")
    op.drop_table("card_number_sequences")
    op.drop_table("blacklist_entries")
    op.drop_index(op.f("ix_blacklist_changes_asn"), table_name="blacklist_changes")
    op.drop_table("blacklist_changes")
    op.drop_table("audit_head")
    op.drop_index(op.f("ix_audit_entries_actor"), table_name="audit_entries")
    op.drop_index(op.f("ix_audit_entries_action"), table_name="audit_entries")
    op.drop_table("audit_entries")
