"""The dead-letter database: one engine per process, SQLite tuned for several writers, migrations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from settings import get_settings
from settings.config import with_sql_driver

SQLITE_BUSY_TIMEOUT_MS = 10_000
_engines: dict[tuple[int, str], tuple[Engine, sessionmaker]] = {}


class NotMigratedError(RuntimeError):
    """The database's schema is not at the code's migration head."""


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers and one writer work at once; the busy timeout queues other writers
    # (several worker processes) instead of failing them with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _database_url(url: str | None) -> str:
    """The given URL, or the configured one, naming the installed PostgreSQL driver."""
    return with_sql_driver(url) if url else get_settings().sql_url


def engine(url: str | None = None) -> Engine:
    return _engine_and_sessions(url)[0]


def _create_private(path: str | None) -> None:
    """Create a SQLite file readable by its owner only (dead letters hold job inputs) before SQLite does."""
    if path and path != ":memory:" and not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _engine_and_sessions(url: str | None = None) -> tuple[Engine, sessionmaker]:
    url = _database_url(url)
    key = (os.getpid(), url)
    if key not in _engines:
        if url.startswith("sqlite"):
            _create_private(make_url(url).database)
            created = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            event.listen(created, "connect", _tune_sqlite)
        else:
            created = create_engine(
                url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args={"connect_timeout": 3}
            )
        _engines[key] = (created, sessionmaker(created, expire_on_commit=False))
    return _engines[key]


@contextmanager
def session(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back if it raises."""
    with _engine_and_sessions(url)[1].begin() as active:
        yield active


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    url = _database_url(url)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None) -> None:
    """Migrate to this code's head; a database a later release has already migrated further is left alone."""
    current, _ = revisions(url)
    if current is not None and current not in _known(url):
        return
    command.upgrade(alembic_config(url), "head")


def revisions(url: str | None = None) -> tuple[str | None, str]:
    """(the database's revision, the code's head revision)."""
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision(), head


def _known(url: str | None) -> set[str]:
    """Every revision this code's migrations know (its head and what it revises)."""
    return {script.revision for script in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()}


def _runs_with(url: str | None, revision: str) -> str | None:
    """The oldest code head a database at `revision` runs with, as its migration wrote it in vetro_schema."""
    try:
        with engine(url).connect() as connection:
            query = text("SELECT runs_with FROM vetro_schema WHERE revision = :revision")
            return connection.execute(query, {"revision": revision}).scalar()
    except SQLAlchemyError:
        return None  # no vetro_schema: a database older than the policy, never ahead of this code


def require_migrated(url: str | None = None) -> None:
    """Refuse a database behind this code, or ahead of it by a migration this code cannot run with.

    The policy (docs/explanation/migrations.md): an expand migration only adds, and records that code
    at the previous head runs on it, so old workers go on during a rolling deploy; a contract
    migration records its own revision, and old code stops with this message.
    """
    current, head = revisions(url)
    if current == head:
        return
    known = _known(url)
    if current in known or current is None:
        raise NotMigratedError(
            f"the dead-letter database {_safe(_database_url(url))} is at revision {current or 'none'}, "
            f"the code needs {head}: run `vetro db upgrade`"
        )
    runs_with = _runs_with(url, current)
    if runs_with not in known:
        raise NotMigratedError(
            f"the dead-letter database {_safe(_database_url(url))} is at revision {current}, newer than this "
            f"code ({head}) and not compatible with it (it needs code at {runs_with or 'its own revision'} or "
            "later): deploy the newer release"
        )


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    return engine(url).url.render_as_string(hide_password=True)


def main() -> int:
    """The migration check as its own process (the worker runs it so as never to load Alembic itself)."""
    try:
        require_migrated()
    except NotMigratedError as error:
        print(error)
        return 2
    except SQLAlchemyError as error:
        print(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
