"""the console: dead letters under review, the audit log, background operations, the schema policy

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 18:00:00

An expand migration (docs/explanation/migrations.md): it only adds, so code at 0002 runs on it.
`vetro_schema` says so for the releases that read it: code whose own head is `runs_with` or later
may run on this database.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RUNS_WITH = "0002"


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as table:
        table.add_column(sa.Column("claimed_by", sa.String(length=128), nullable=True))
        table.add_column(sa.Column("claimed_at", sa.DateTime(), nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("ids_digest", sa.String(length=64), nullable=False),
        sa.Column("incident", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("diff", sa.JSON(), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("at", "actor", "action"):
        op.create_index(f"ix_audit_log_{column}", "audit_log", [column])
    op.create_table(
        "operations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("incident", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("audit_id", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_operations_state", "operations", ["state"])
    op.create_table(
        "vetro_schema",
        sa.Column("revision", sa.String(length=32), nullable=False),
        sa.Column("runs_with", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("revision"),
    )
    op.execute(
        sa.text("INSERT INTO vetro_schema (revision, runs_with) VALUES ('0003', :runs_with)").bindparams(
            runs_with=RUNS_WITH
        )
    )


def downgrade() -> None:
    op.drop_table("vetro_schema")
    op.drop_table("operations")
    op.drop_table("audit_log")
    with op.batch_alter_table("dead_letters") as table:
        table.drop_column("claimed_at")
        table.drop_column("claimed_by")
