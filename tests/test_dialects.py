"""The dialect classes own what differs between SQLite and PostgreSQL; nothing else branches on it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select

import roster
from roster.errors import UsageError
from conftest import ManualClock
from roster.specfile import parse_spec
from roster.store import Store
from roster.store.dialects import PostgreSQLDialect, SQLiteDialect, dialect_named, fts_table
from roster.store.schema import task_views

SRC = Path(roster.__file__).parent
SPEC = """
company: acme
humans:
  alice: {}
agents:
  ann: {mission: m}
workflows:
  fix:
    states: [open, done]
    initial: open
    transitions:
      finish: {from: open, to: done, by: [ann]}
"""


def test_only_the_dialect_module_asks_which_database_it_is():
    """A branch on the database's name anywhere else (outside migrations, which are history, and the
    prepared-statement cache, which keys on it) is a dialect difference that escaped its class."""
    pattern = re.compile(r"dialect\.name|== ?\"(sqlite|postgresql)\"|!= ?\"(sqlite|postgresql)\"")
    found = [f"{path.relative_to(SRC)}:{n}" for path in SRC.rglob("*.py")
             if "migrations" not in path.parts and path.name not in ("dialects.py", "prepared.py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_an_unknown_database_is_refused_with_the_two_it_runs_on():
    with pytest.raises(UsageError, match="SQLite and PostgreSQL, not 'mysql'"):
        dialect_named("mysql")


@pytest.fixture
def acme(db_url):
    store = Store.open(db_url, clock=ManualClock())
    store.apply(parse_spec(SPEC), applied_by="alice")
    yield store
    store.close()


def test_the_store_speaks_its_databases_dialect(acme, db_backend):
    expected = {"sqlite": SQLiteDialect, "postgresql": PostgreSQLDialect}[db_backend]
    assert type(acme.dialect) is expected
    assert (acme._writer is not None) is (db_backend == "sqlite")  # one writer lock per process on a file


def test_an_upsert_inserts_once_then_updates_the_same_row(acme):
    company = acme.company("acme")
    task = company.create_task(workflow="fix", title="t", actor="alice")[0]
    upsert = acme.dialect.upsert(
        task_views, {"company_id": "acme", "task_id": task.id, "principal": "ann", "seq": bindparam("seq"),
                     "version": 1, "fields": "{}", "artifacts": "{}", "seen_at": "now"},
        key=("company_id", "task_id", "principal"), update=("seq",))
    for seq in (5, 9):
        with acme.write() as conn:
            conn.execute(upsert, {"seq": seq})
    with acme.read() as conn:
        rows = conn.execute(select(task_views.c.seq).where(task_views.c.task_id == task.id)).all()
    assert [r.seq for r in rows] == [9]


def test_memory_is_indexed_where_the_dialect_keeps_an_index(acme, db_backend):
    company = acme.company("acme")
    company.remember("ruff's E501 is the long-line rule", actor="ann")
    with acme.read() as conn:
        exists = acme.dialect.memory_index_exists(conn, "acme")
        if db_backend == "sqlite":
            names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_schema WHERE type = 'table'")}
            assert fts_table("acme") in names
    assert exists
    assert acme.dialect.keeps_memory_index is (db_backend == "sqlite")
    assert [e.text for e in company.recall("long line rule", actor="ann")] == ["ruff's E501 is the long-line rule"]
