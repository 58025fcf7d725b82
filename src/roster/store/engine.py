"""Opening a database: the engine, the SQLite pragmas (set in one connect hook) and schema migrations.

SQLite is the default (``.roster/roster.db`` beside the spec). Every connection sets, explicitly:

- ``journal_mode=WAL`` - readers never block the writer, nor the writer the readers;
- ``synchronous=NORMAL`` - durable across application crashes; in WAL mode the last commits may be lost
  only on power loss (see https://www.sqlite.org/pragma.html#pragma_synchronous);
- ``foreign_keys=ON`` and ``busy_timeout`` = the lock timeout, so a locked database is waited for.

Write transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of
failing halfway with a deadlock. Migrations are Alembic's, shipped in the package, and run at open.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_LOCK_TIMEOUT = 5.0
"""Seconds a write waits for another process's lock before :class:`~roster.errors.StoreBusy`."""
POOL_SIZE = 10
POOL_OVERFLOW = 40
"""Connections kept in the pool, and how many more may be opened at busy moments (runs ending at once)."""


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path)}"


def make_engine(url: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Engine:
    """An engine for ``url`` with Roster's connection settings. ``lock_timeout`` is in seconds."""
    # A dispatcher's runs end in worker threads, each transaction on a connection of its own: the pool
    # keeps up to POOL_SIZE + POOL_OVERFLOW of them rather than making runs queue for one (30 s at most).
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": lock_timeout}, pool_size=POOL_SIZE,
                               max_overflow=POOL_OVERFLOW)
        _configure_sqlite(engine, lock_timeout)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


def _configure_sqlite(engine: Engine, lock_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's begin event, not the driver, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA cache_size = -65536")  # 64 MiB of page cache per connection, not 2 MiB
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        # Straight to the driver: this runs once per transaction, on the hot path.
        connection.connection.driver_connection.execute(f"BEGIN {mode}")


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(engine: Engine) -> bool:
    """Bring the schema to the newest migration. Returns whether anything was run."""
    config = _alembic_config()
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return False
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return True
