"""Opening a database: the engine (its connection settings from :mod:`roster.store.dialects`) and schema migrations.

SQLite is the default (``.roster/roster.db`` beside the spec). Every connection sets, explicitly:

- ``journal_mode=WAL`` - readers never block the writer, nor the writer the readers;
- ``synchronous=NORMAL`` - durable across application crashes; in WAL mode the last commits may be lost
  only on power loss (see https://www.sqlite.org/pragma.html#pragma_synchronous);
- ``foreign_keys=ON`` and ``busy_timeout`` = the lock timeout, so a locked database is waited for.

Write transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of
failing halfway with a deadlock. Migrations are Alembic's, shipped in the package, and run at open.
Alembic itself (~75 ms of imports) is loaded only when the database is not at the newest revision: a
command that opens a current database (nearly all of them) reads the revision with one query. SQLAlchemy
is imported when an engine is made, so that the CLI may import this module's defaults for its help.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine

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
    from sqlalchemy import create_engine  # see the module docstring

    from roster.store.dialects import dialect_of  # with SQLAlchemy, as above

    # A dispatcher's runs end in worker threads, each transaction on a connection of its own: the pool
    # keeps up to POOL_SIZE + POOL_OVERFLOW of them rather than making runs queue for one (30 s at most).
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": lock_timeout}, pool_size=POOL_SIZE,
                               max_overflow=POOL_OVERFLOW)
        dialect_of(engine).configure(engine, lock_timeout)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


VERSION_TABLE = "alembic_version"
"""Alembic's table holding the database's revision (its default name, in the default schema)."""

_REVISION_LINE = re.compile(r"""^(down_revision|revision)\s*(?::[^=]*)?=\s*(None|'[^']*'|"[^"]*")\s*$""",
                            re.MULTILINE)


def _alembic_config() -> Config:
    from alembic.config import Config  # alembic only when a migration is needed

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def shipped_head() -> str | None:
    """The newest revision shipped in ``migrations/versions``, read from the files' ``revision`` and
    ``down_revision`` lines without importing Alembic; None when the files are not one plain chain
    (a branch, a merge, a line written differently), and then :func:`migrate` asks Alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found: dict[str, list[str]] = {}
        for name, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(value)
        if len(found.get("revision", ())) != 1 or len(found.get("down_revision", ())) != 1:
            return None
        revisions.add(found["revision"][0][1:-1])
        if found["down_revision"][0] != "None":
            parents.add(found["down_revision"][0][1:-1])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and len(revisions) == len(parents) + 1 else None


def current_revision(engine: Engine) -> str | None:
    """The revision recorded in the database (None when it has no version table or no single row)."""
    from sqlalchemy import inspect, text

    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return rows[0] if len(rows) == 1 else None


def migrate(engine: Engine) -> bool:
    """Bring the schema to the newest migration. Returns whether anything was run.

    A database already at the shipped head is recognised with one query and no Alembic import; any
    other state (new, behind, or migrations that are not one plain chain) is left to Alembic."""
    head = shipped_head()
    if head is not None and current_revision(engine) == head:
        return False
    return _upgrade(engine)


def _upgrade(engine: Engine) -> bool:
    from alembic import command  # see the module docstring
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

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
