"""Statements for the hot paths (a transition, a run's brief): compiled once per dialect, run straight on the DB-API cursor.

The SQL still comes from SQLAlchemy Core (so it stays portable: ``?`` for SQLite, ``%(name)s`` for
psycopg), but skipping SQLAlchemy's per-call execution machinery takes ~12 us off each of the five
statements a transition runs, which is what lets one process commit more than 5,000 audited
transitions per second (see docs/performance.md). Use this only for statements whose parameters and
result columns need no type conversion (text and integers), inside a transaction opened by the store.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql import Executable

from roster.store import text_guard


class Prepared:
    """One statement. ``execute(conn, params)`` returns the driver's cursor; ``first`` a row or ``None``."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._by_dialect: dict[str, tuple[str, list[str] | None, dict[str, Any]]] = {}
        columns = getattr(statement, "selected_columns", None)
        self.row = namedtuple("Row", list(columns.keys())) if columns is not None else None
        """Rows are named tuples of the selected columns; for a ``text()`` query, of the cursor's columns."""

    def _compiled(self, conn: Connection) -> tuple[str, list[str] | None, dict[str, Any]]:
        entry = self._by_dialect.get(conn.dialect.name)
        if entry is None:
            compiled = self.statement.compile(dialect=conn.dialect)
            names = list(compiled.positiontup) if compiled.positional else None
            # Parameters the dialect adds itself (SQLite's OFFSET beside a bound LIMIT) keep their value.
            defaults = {k: v for k, v in compiled.params.items() if v is not None}
            entry = self._by_dialect[conn.dialect.name] = (compiled.string, names, defaults)
        return entry

    def execute(self, conn: Connection, params: dict[str, Any]) -> Any:
        sql, names, defaults = self._compiled(conn)
        if defaults:
            params = {**defaults, **params}
        text_guard.check_parameters(sql, params)  # no NUL reaches a text column, as for every other statement
        cursor = conn.connection.driver_connection.cursor()
        cursor.execute(sql, [params[name] for name in names] if names is not None else params)
        return cursor

    def first(self, conn: Connection, params: dict[str, Any]) -> Any:
        cursor = self.execute(conn, params)
        try:
            values = cursor.fetchone()
            return None if values is None else self._row(cursor)._make(values)
        finally:
            cursor.close()

    def all(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        cursor = self.execute(conn, params)
        try:
            row = self._row(cursor)
            return [row._make(values) for values in cursor.fetchall()]
        finally:
            cursor.close()

    def _row(self, cursor: Any) -> Any:
        if self.row is None:  # a text() query: its columns are known once it ran
            self.row = namedtuple("Row", [column[0] for column in cursor.description])
        return self.row

    def rowcount(self, conn: Connection, params: dict[str, Any]) -> int:
        cursor = self.execute(conn, params)
        count = cursor.rowcount
        cursor.close()
        return count
