"""vetro's own failures under the names they took when the core moved into subpackages

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 14:50:00

PoisonJobError, UnknownJobError and StalledJobError moved to pipeline.failures. Dead letters kept
before the move name them by their old modules; renamed here, with their fingerprints worked out
again, they group with (and replay by the same fingerprint as) the ones kept after it.
"""

import sqlalchemy as sa
from alembic import op

from dlq.fingerprint import fingerprint

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MOVED = {
    "pipeline.phases.PoisonJobError": "pipeline.failures.PoisonJobError",
    "pipeline.phases.UnknownJobError": "pipeline.failures.UnknownJobError",
    "pipeline.reconciler.StalledJobError": "pipeline.failures.StalledJobError",
}
dead_letters = sa.table(
    "dead_letters",
    sa.column("id", sa.Integer),
    sa.column("stage", sa.String),
    sa.column("exception_type", sa.String),
    sa.column("message", sa.Text),
    sa.column("fingerprint", sa.String),
)


def _rename(names: dict[str, str]) -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(dead_letters.c.id, dead_letters.c.stage, dead_letters.c.exception_type, dead_letters.c.message).where(
            dead_letters.c.exception_type.in_(list(names))
        )
    ).all()
    for row in rows:
        renamed = names[row.exception_type]
        connection.execute(
            dead_letters.update()
            .where(dead_letters.c.id == row.id)
            .values(exception_type=renamed, fingerprint=fingerprint(row.stage, renamed, row.message))
        )


def upgrade() -> None:
    _rename(MOVED)


def downgrade() -> None:
    _rename({new: old for old, new in MOVED.items()})
