"""Migrations a rolling deploy survives (docs/explanation/migrations.md): a worker runs on a database at its
own revision, or ahead of it by expand migrations that say so; it refuses one that is behind, or ahead by
a contract migration, in one line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from alembic import command

from dlq import store
from dlq.db import NotMigratedError, alembic_config, require_migrated, upgrade
from tests.conftest import worker_env
from tests.helpers import celery_worker
from tests.pipelines import refuse
from vetro.testing.processes import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

NEXT_RELEASE = '''
"""a later release's migration, {kind}

Revision ID: 0099
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0099"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("dead_letters") as table:
        table.add_column(sa.Column("added_later", sa.String(length=32), nullable=True))
    op.execute("INSERT INTO vetro_schema (revision, runs_with) VALUES ('0099', '{runs_with}')")
'''


def migrate_to_a_later_release(url: str, directory: Path, kind: str, runs_with: str) -> None:
    """Migrate the database with this release's migrations and one more that this code does not know."""
    (directory / "0099_later.py").write_text(textwrap.dedent(NEXT_RELEASE.format(kind=kind, runs_with=runs_with)))
    config = alembic_config(url)
    config.set_main_option("version_locations", f"{config.get_main_option('script_location')}/versions {directory}")
    command.upgrade(config, "head")


def test_a_database_behind_the_code_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/dlq.db"
    command.upgrade(alembic_config(url), "0002")
    with pytest.raises(NotMigratedError, match="is at revision 0002, the code needs 0003: run `vetro db upgrade`"):
        require_migrated(url)


def test_a_database_ahead_by_a_contract_migration_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/dlq.db"
    migrate_to_a_later_release(url, tmp_path, "contract", runs_with="0099")
    with pytest.raises(NotMigratedError, match=r"newer than this code \(0003\) and not compatible with it"):
        require_migrated(url)
    result = celery_worker(worker_env(VETRO_DATABASE_URL=url))
    assert result.returncode != 0 and "deploy the newer release" in result.stderr


def test_a_worker_runs_on_a_database_a_later_expand_migration_has_moved_ahead(database, tmp_path):
    """The rolling deploy: the new release migrated the database (expand); this release's workers go on,
    and what they dead-letter is written and read beside the column they do not know."""
    migrate_to_a_later_release(database, tmp_path, "expand", runs_with="0003")
    require_migrated(database)
    worker = WorkerProcess(worker_env(VETRO_DATABASE_URL=database), concurrency=1, name="rolling")
    worker.start()
    try:
        refuse.delay("old worker, new schema")
        found = store.RowFilter(error="old worker, new schema")
        rows = wait_until(lambda: store.rows(found), 120, "the failure's dead letter")
    finally:
        worker.stop()
    assert rows[0].message == "no 'old worker, new schema'" and rows[0].status == "failed"
    upgrade(database)  # this release's `vetro db upgrade` leaves a database a later one migrated alone
    require_migrated(database)
