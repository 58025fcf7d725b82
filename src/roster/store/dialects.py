"""What differs between SQLite and PostgreSQL, in one place: engines, locking, upserts, full-text search.

Every other store module is portable SQLAlchemy Core; where the two databases must be spoken to
differently, it asks the :class:`Dialect` of its engine or connection (:func:`dialect_of`):

- **Engines and locking.** SQLite is a file: every connection sets its pragmas, write transactions begin
  ``IMMEDIATE`` (two writers queue on the lock instead of deadlocking halfway), and the threads of one
  process take turns on a lock of their own (:attr:`Dialect.one_writer`). PostgreSQL is a server: the
  company row is locked with ``SELECT ... FOR UPDATE`` (SQLAlchemy's ``with_for_update``, which renders
  nothing on SQLite), a commit that made work sends ``NOTIFY`` to the other processes, a lost connection
  is a :class:`~roster.errors.StoreUnavailable` to wait out, and a claim looks before it locks.
- **Upserts.** ``INSERT ... ON CONFLICT DO UPDATE`` from each dialect's own ``insert`` construct.
- **Full-text search** of memory entries. SQLite: an FTS5 table per company (porter stemming, unicode61
  words; ``bm25`` ranking), kept in step with ``memory_entries`` by the store. PostgreSQL:
  ``to_tsvector('english')`` over the text with punctuation turned into spaces, ranked by ``ts_rank``,
  served by migration 0016's expression index, with nothing to keep in step. The ranking statistics never
  cross companies either way (see :mod:`roster.store.memory`).

Migrations keep their own copies of the SQL they ran: a migration is history and must not change when
this module does.
"""

from __future__ import annotations

import functools
import importlib
import re
import sqlite3
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from roster.errors import UsageError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Table
    from sqlalchemy.sql.dml import Insert

    from roster.store.prepared import Prepared

WAKE_CHANNEL = "roster_work"
"""The PostgreSQL ``LISTEN``/``NOTIFY`` channel on which a commit that made work wakes other processes."""

_COMPANY_ID = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class Dialect:
    """The database-specific part of the store. Obtain with :func:`dialect_of`; never construct."""

    name: ClassVar[str]
    one_writer: ClassVar[bool]
    """Whether the threads of one process take turns to write on a lock of their own (SQLite: see
    :meth:`roster.store.store.Store.write`)."""
    server: ClassVar[bool]
    """Whether the database is a server that can be lost and come back (a dropped connection, a restart),
    and that other processes reach at the same time: reads that may save a lock wait are worth doing first."""
    listens: ClassVar[bool]
    """Whether other processes can be woken by :meth:`notify_work` (``LISTEN``)."""

    # -- engines and locking -------------------------------------------------------------------------

    def configure(self, engine: Engine, lock_timeout: float) -> None:
        """Set up every connection ``engine`` makes (``lock_timeout`` in seconds)."""

    def disconnect_errors(self, engine: Engine) -> tuple[type[BaseException], ...]:
        """The driver's errors for a lost or refused connection (raised as :class:`StoreUnavailable`)."""
        return ()

    def lock_timed_out(self, error: BaseException) -> bool:
        """Whether the driver's ``error`` says a lock was waited for in vain (raised as :class:`StoreBusy`)."""
        return False

    def writer_lock(self) -> threading.RLock | None:
        """The lock this process's writers take turns on, or None (see :attr:`one_writer`)."""
        return threading.RLock() if self.one_writer else None

    def notify_work(self, conn: Connection, company: str) -> None:
        """Wake other processes' dispatchers for ``company`` once ``conn``'s transaction commits."""

    # -- upserts --------------------------------------------------------------------------------------

    def upsert(self, table: Table, values: dict[str, Any], key: Sequence[str], update: Sequence[str]) -> Insert:
        """``INSERT`` ``values`` into ``table``, or, when a row with the same ``key`` columns exists, set
        its ``update`` columns to the inserted values: one statement, no read first."""
        insert = importlib.import_module(f"sqlalchemy.dialects.{self.name}").insert
        statement = insert(table).values(values)
        return statement.on_conflict_do_update(index_elements=[table.c[k] for k in key],
                                               set_={c: statement.excluded[c] for c in update})

    # -- full-text search of memory entries -----------------------------------------------------------

    keeps_memory_index: ClassVar[bool]
    """Whether the store writes each entry into a full-text index of its own (SQLite's FTS5 tables)."""

    def memory_index_exists(self, conn: Connection, company: str) -> bool:
        """Whether ``company``'s full-text index of memory entries exists (always, where none is kept)."""
        return True

    def create_memory_index(self, conn: Connection, company: str) -> None:
        """Create ``company``'s index in ``conn``'s transaction, filled from its entries (if one is kept)."""

    def index_memory(self, conn: Connection, company: str, entry_id: int, text: str) -> None:
        """Add one entry to ``company``'s index, in the transaction that inserts it."""

    def unindex_memory(self, conn: Connection, company: str, entry_ids: Sequence[int]) -> None:
        """Remove entries from ``company``'s index, in the transaction that deletes them."""

    def memory_query(self, words: Sequence[str]) -> str:
        """The search expression for ``words`` (any of them), bound as ``:q`` in :meth:`recall_sql`."""
        raise NotImplementedError

    def recall_sql(self, company: str, pads: int, kinds: int) -> Prepared:
        """The ranked recall query over ``company``'s entries for ``pads`` pads (``:pad0``...) and
        ``kinds`` kinds (``:kind0``...), with ``:company``, ``:now``, ``:q`` and ``:limit``: rows of
        ``memory_entries`` with a ``score`` (text relevance times ``0.5 + 0.5 * confidence``), best first,
        ties to the newest."""
        raise NotImplementedError


def _recall_where(pads: int, kinds: int) -> str:
    where = (f"m.company_id = :company AND m.pad IN ({', '.join(f':pad{i}' for i in range(pads))}) "
             "AND (m.expires_at IS NULL OR m.expires_at > :now)")
    if kinds:
        where += f" AND m.kind IN ({', '.join(f':kind{i}' for i in range(kinds))})"
    return where


_WEIGHT = "(0.5 + 0.5 * m.confidence)"


class SQLiteDialect(Dialect):
    name = "sqlite"
    one_writer = True
    server = False
    listens = False
    keeps_memory_index = True

    def configure(self, engine: Engine, lock_timeout: float) -> None:
        """Pragmas on every connection (WAL, ``synchronous=NORMAL``, foreign keys, ``busy_timeout``), and
        transactions begun by SQLAlchemy's ``begin`` event in the mode the store asks for (``IMMEDIATE``
        for writes; see :mod:`roster.store.engine`)."""
        from sqlalchemy import event  # SQLAlchemy loads with the engine (see engine.py)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):  # noqa: ANN001, ANN202
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
        def _on_begin(connection):  # noqa: ANN001, ANN202
            mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
            # Straight to the driver: this runs once per transaction, on the hot path.
            connection.connection.driver_connection.execute(f"BEGIN {mode}")

    def lock_timed_out(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)

    def memory_index_exists(self, conn: Connection, company: str) -> bool:
        from sqlalchemy import text

        return conn.execute(text("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = :name"),
                            {"name": fts_table(company)}).first() is not None

    def create_memory_index(self, conn: Connection, company: str) -> None:
        from sqlalchemy import text

        table = fts_table(company)
        conn.execute(text(f'CREATE VIRTUAL TABLE "{table}" USING fts5(text, tokenize = \'porter unicode61\')'))
        conn.execute(text(f'INSERT INTO "{table}"(rowid, text) SELECT id, text FROM memory_entries '
                          "WHERE company_id = :company ORDER BY id"), {"company": company})

    def index_memory(self, conn: Connection, company: str, entry_id: int, text: str) -> None:
        from sqlalchemy import text as sql

        conn.execute(sql(f'INSERT INTO "{fts_table(company)}"(rowid, text) VALUES (:id, :text)'),
                     {"id": entry_id, "text": text})

    def unindex_memory(self, conn: Connection, company: str, entry_ids: Sequence[int]) -> None:
        from sqlalchemy import text

        statement = text(f'DELETE FROM "{fts_table(company)}" WHERE rowid = :id')
        for entry_id in entry_ids:
            conn.execute(statement, {"id": entry_id})

    def memory_query(self, words: Sequence[str]) -> str:
        return " OR ".join(f'"{w}"' for w in words)

    def recall_sql(self, company: str, pads: int, kinds: int) -> Prepared:
        return _sqlite_recall(fts_table(company), pads, kinds)


@functools.lru_cache(maxsize=1024)
def _sqlite_recall(table: str, pads: int, kinds: int) -> Prepared:
    from sqlalchemy import text

    from roster.store.prepared import Prepared  # it imports SQLAlchemy at load

    fts = f'"{table}"'
    return Prepared(text(f"SELECT m.*, -bm25({fts}) * {_WEIGHT} AS score FROM {fts} "
                         f"JOIN memory_entries m ON m.id = {fts}.rowid WHERE {fts} MATCH :q "
                         f"AND {_recall_where(pads, kinds)} ORDER BY score DESC, m.id DESC LIMIT :limit"))


PG_SEPARATORS = "[^[:alnum:]_]+"
"""On PostgreSQL, what separates words before ``to_tsvector`` (as FTS5's unicode61 tokenizer separates them
on SQLite): without it the default parser reads ``tool.ruff`` or ``a/b.py`` as one token."""


class PostgreSQLDialect(Dialect):
    name = "postgresql"
    one_writer = False
    server = True
    listens = True
    keeps_memory_index = False

    def disconnect_errors(self, engine: Engine) -> tuple[type[BaseException], ...]:
        dbapi = engine.dialect.loaded_dbapi
        return (dbapi.OperationalError, dbapi.InterfaceError)

    def notify_work(self, conn: Connection, company: str) -> None:
        """``NOTIFY`` on :data:`WAKE_CHANNEL`, delivered at commit and dropped on rollback."""
        conn.exec_driver_sql(f"SELECT pg_notify('{WAKE_CHANNEL}', %(company)s)", {"company": company})

    def memory_query(self, words: Sequence[str]) -> str:
        return " | ".join(words)

    def recall_sql(self, company: str, pads: int, kinds: int) -> Prepared:
        return _postgresql_recall(pads, kinds)  # one expression index serves every company


@functools.lru_cache(maxsize=1024)
def _postgresql_recall(pads: int, kinds: int) -> Prepared:
    from sqlalchemy import text

    from roster.store.prepared import Prepared

    vector = f"to_tsvector('english', regexp_replace(m.text, '{PG_SEPARATORS}', ' ', 'g'))"  # migration 0016's index
    return Prepared(text(f"SELECT m.*, ts_rank({vector}, to_tsquery('english', :q)) * {_WEIGHT} AS score "
                         f"FROM memory_entries m WHERE {vector} @@ to_tsquery('english', :q) "
                         f"AND {_recall_where(pads, kinds)} ORDER BY score DESC, m.id DESC LIMIT :limit"))


_DIALECTS: dict[str, Dialect] = {d.name: d for d in (SQLiteDialect(), PostgreSQLDialect())}


def dialect_named(name: str) -> Dialect:
    """The :class:`Dialect` of SQLAlchemy dialect ``name``. Raises :class:`UsageError` for a database
    Roster does not run on."""
    try:
        return _DIALECTS[name]
    except KeyError:
        raise UsageError(f"Roster runs on SQLite and PostgreSQL, not '{name}'; use a sqlite:/// or "
                         "postgresql+psycopg:// URL") from None


def dialect_of(bind: Connection | Engine) -> Dialect:
    """The :class:`Dialect` of a connection or engine."""
    return dialect_named(bind.dialect.name)


def fts_table(company: str) -> str:
    """The name of ``company``'s SQLite FTS5 index of memory entries: ``memory_fts_<company>_index``.

    The ``_index`` ending keeps names apart from FTS5's own shadow tables (``<name>_data``, ``_idx``,
    ``_content``, ``_docsize``, ``_config``): no company's index name can equal another's shadow table.
    Raises :class:`UsageError` for a company id outside the spec's ``[a-z][a-z0-9_-]{0,62}``."""
    if not _COMPANY_ID.match(company):
        raise UsageError(f"company id '{company}' is not [a-z][a-z0-9_-]{{0,62}}; no memory index can be named for it")
    return f"memory_fts_{company}_index"
